//! Conference rooms in the engine, in simulated time: dialling a room number is answered
//! by Switchboard itself, participants join and leave, and the room commands (list, mute,
//! kick) act on them. What the runtime is told is checked through `EngineEvent::Room`.
//! (The audio itself is tested in `switchboard_media::mixer` and end to end in
//! `tests/e2e_conference.rs`.)

mod support;

use std::time::Duration;

use switchboard_core::command::{Command, CommandError, CommandReply};
use switchboard_core::conference::{CallOutReport, ConferenceConfig, RoomCommand};
use switchboard_core::media::MediaConfig;
use switchboard_core::EngineEvent;
use switchboard_media::codec::CodecKind;
use switchboard_sip::transaction::{ClientTxId, ServerTxId};
use switchboard_sip::{HeaderName, Method, Request, Response};

use support::{config, secs, user, Net, PhoneId, DOMAIN};
use switchboard_sip::digest::Algorithm;

const PCMA_OFFER: &str = "v=0\r\no=103 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40010 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\n";
const MULTI_OFFER: &str = "v=0\r\no=101 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 111 0 8\r\na=rtpmap:111 opus/48000/2\r\n";

fn net() -> Net {
    let mut cfg = config(vec![Algorithm::Md5]);
    cfg.media =
        Some(MediaConfig::new("127.0.0.1".into(), 30000, 30099, Duration::from_secs(30)).unwrap());
    cfg.conference = Some(ConferenceConfig {
        rooms: vec!["800-849".parse().unwrap(), "850-899".parse().unwrap()],
        moderated: vec!["850-899".parse().unwrap()],
        speakers: vec!["103".into()],
        tones: true,
        factory: Some("conf".into()),
    });
    Net::new(
        cfg,
        vec![
            user("101", Some("1101"), "secret-101"),
            user("102", Some("1102"), "secret-102"),
            user("103", None, "secret-103"),
        ],
    )
}

fn phones(net: &mut Net) -> [PhoneId; 3] {
    let ids = [
        net.add_phone("101", "secret-101", 5061),
        net.add_phone("102", "secret-102", 5062),
        net.add_phone("103", "secret-103", 5063),
    ];
    for p in ids {
        assert_eq!(net.register(p, 3600).status, 200);
    }
    ids
}

/// Phone `p` dials `room` with `sdp` (answering the 407) and gets its final response.
fn dial(net: &mut Net, p: PhoneId, room: &str, sdp: &str) -> (ClientTxId, Response) {
    let mut invite = net.phone(p).invite(room);
    invite.set_body(sdp.as_bytes().to_vec(), Some("application/sdp"));
    let tx = net.send_authenticated(p, invite);
    assert!(
        net.run_until(|n| n.phones[p].final_response(tx).is_some(), secs(5)),
        "{}",
        net.wire_log()
    );
    (tx, net.phone(p).final_response(tx).unwrap())
}

fn joins(net: &Net) -> Vec<(String, u64, CodecKind, bool)> {
    net.events
        .iter()
        .filter_map(|e| match e {
            EngineEvent::Room(RoomCommand::Join {
                room,
                participant,
                media,
                ..
            }) => Some((room.clone(), *participant, media.codec.kind, media.speaker)),
            _ => None,
        })
        .collect()
}

fn room_events(net: &Net) -> Vec<RoomCommand> {
    net.events
        .iter()
        .filter_map(|e| match e {
            EngineEvent::Room(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

/// (room, [(participant, user, muted, speaker)]).
type Listing = Vec<(String, Vec<(u64, String, bool, bool)>)>;

fn rooms(net: &mut Net) -> Listing {
    let now = net.now;
    match net.engine.handle_command(Command::ListRooms, now).unwrap() {
        CommandReply::Rooms(rooms) => rooms
            .into_iter()
            .map(|r| {
                (
                    r.room,
                    r.participants
                        .into_iter()
                        .map(|p| (p.participant, p.user, p.muted, p.speaker))
                        .collect(),
                )
            })
            .collect(),
        other => panic!("{other:?}"),
    }
}

fn body(resp: &Response) -> String {
    String::from_utf8(resp.body.clone()).unwrap()
}

/// Three phones in room 800: 101 offers Opus first, 102 PCMU, 103 PCMA only.
fn three_in_800() -> (Net, [PhoneId; 3], Vec<Response>) {
    let mut net = net();
    let ids = phones(&mut net);
    let mut answers = Vec::new();
    for (p, sdp) in ids
        .iter()
        .zip([MULTI_OFFER, support::SDP_OFFER, PCMA_OFFER])
    {
        let (_, resp) = dial(&mut net, *p, "800", sdp);
        assert_eq!(resp.status, 200, "{}", net.wire_log());
        answers.push(resp);
    }
    (net, ids, answers)
}

#[test]
fn dialling_a_room_is_answered_by_the_server_in_one_codec_per_participant() {
    let (mut net, ids, answers) = three_in_800();
    // Each answer names exactly one codec, ours, on a port from the pool.
    let sdp: Vec<String> = answers.iter().map(body).collect();
    assert!(
        sdp[0].contains("m=audio 300") && sdp[0].contains(" RTP/AVP 111\r\n"),
        "{}",
        sdp[0]
    );
    assert!(sdp[1].contains(" RTP/AVP 0\r\n"), "{}", sdp[1]);
    assert!(sdp[2].contains(" RTP/AVP 8\r\n"), "{}", sdp[2]);
    let ports: Vec<&str> = sdp
        .iter()
        .map(|s| s.lines().find(|l| l.starts_with("m=audio")).unwrap())
        .collect();
    assert!(ports[0] != ports[1] && ports[1] != ports[2]);
    // Nobody else was rung: the room is the callee.
    for p in ids {
        assert_eq!(net.phone(p).count(Method::Invite), 0);
        assert_eq!(net.phone(p).count(Method::Ack), 0);
    }
    let j = joins(&net);
    assert_eq!(
        j.iter()
            .map(|(r, _, k, s)| (r.as_str(), *k, *s))
            .collect::<Vec<_>>(),
        vec![
            ("800", CodecKind::Opus, false),
            ("800", CodecKind::Pcmu, false),
            ("800", CodecKind::Pcma, false)
        ]
    );
    let opens = room_events(&net)
        .into_iter()
        .filter(|c| matches!(c, RoomCommand::Open { .. }))
        .count();
    assert_eq!(opens, 1, "one mixer per room");
    let listed = rooms(&mut net);
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].1.iter().map(|p| p.1.as_str()).collect::<Vec<_>>(),
        vec!["101", "102", "103"]
    );
    assert_eq!(net.engine.conference_participants(), 3);
    // No call was created, and the ACKs were taken (no 2xx retransmission).
    assert_eq!(net.engine.stats().active_calls, 0);
    net.advance(secs(40));
    let invite_2xx = net
        .delivered
        .iter()
        .filter(|d| {
            let text = String::from_utf8_lossy(&d.data);
            text.starts_with("SIP/2.0 200") && text.contains(" INVITE\r\n")
        })
        .count();
    assert_eq!(
        invite_2xx,
        3,
        "a 2xx was retransmitted after its ACK\n{}",
        net.wire_log()
    );
    let _ = answers;
}

#[test]
fn a_participant_hangs_up_and_the_last_one_closes_the_room() {
    let (mut net, ids, answers) = three_in_800();
    let first = joins(&net)[0].1;
    let call_id = answers[0].call_id().unwrap().to_string();
    let bye = net.phone(ids[0]).in_dialog(&call_id, Method::Bye);
    let tx = net.send(ids[0], bye);
    net.settle();
    assert_eq!(net.phone(ids[0]).final_response(tx).unwrap().status, 200);
    assert!(room_events(&net).contains(&RoomCommand::Leave {
        room: "800".into(),
        participant: first
    }));
    assert_eq!(rooms(&mut net)[0].1.len(), 2);
    for (i, answer) in answers.iter().enumerate().skip(1) {
        let call_id = answer.call_id().unwrap().to_string();
        let bye = net.phone(ids[i]).in_dialog(&call_id, Method::Bye);
        net.send(ids[i], bye);
    }
    net.settle();
    assert_eq!(
        room_events(&net).last(),
        Some(&RoomCommand::Close { room: "800".into() })
    );
    assert!(rooms(&mut net).is_empty());
    // Every port pair went back to the pool: a BYE for a gone dialog is 481.
    let bye = net.phone(ids[0]).in_dialog(&call_id, Method::Bye);
    let tx = net.send(ids[0], bye);
    net.settle();
    assert_eq!(net.phone(ids[0]).final_response(tx).unwrap().status, 481);
}

#[test]
fn mute_and_kick_by_command() {
    let (mut net, ids, _) = three_in_800();
    let now = net.now;
    let second = joins(&net)[1].1;
    let mute = Command::RoomMute {
        room: "800".into(),
        participant: second,
        muted: true,
    };
    assert_eq!(
        net.engine.handle_command(mute, now),
        Ok(CommandReply::Accepted)
    );
    net.settle();
    assert!(room_events(&net).contains(&RoomCommand::Mute {
        room: "800".into(),
        participant: second,
        muted: true
    }));
    assert!(rooms(&mut net)[0].1.iter().any(|p| p.0 == second && p.2));
    // Wrong room, wrong participant: errors with their HTTP status, no panic.
    let wrong_room = Command::RoomMute {
        room: "801".into(),
        participant: second,
        muted: true,
    };
    let err = net.engine.handle_command(wrong_room, now).unwrap_err();
    assert_eq!(err, CommandError::NoSuchRoom("801".into()));
    assert_eq!(err.http_status(), 404);
    let wrong = Command::RoomKick {
        room: "800".into(),
        participant: 9999,
    };
    assert_eq!(
        net.engine.handle_command(wrong, now),
        Err(CommandError::NoSuchParticipant(9999))
    );

    let kick = Command::RoomKick {
        room: "800".into(),
        participant: second,
    };
    assert_eq!(
        net.engine.handle_command(kick, now),
        Ok(CommandReply::Accepted)
    );
    net.settle();
    // 102 got a BYE (and answered it), and left the room.
    assert_eq!(net.phone(ids[1]).count(Method::Bye), 1);
    assert!(room_events(&net).contains(&RoomCommand::Leave {
        room: "800".into(),
        participant: second
    }));
    let left: Vec<String> = rooms(&mut net)[0].1.iter().map(|p| p.1.clone()).collect();
    assert_eq!(left, vec!["101", "103"]);
    assert!(net.run_to_quiet(secs(60)), "{}", net.wire_log());
}

#[test]
fn hold_by_reinvite_stops_our_audio_to_the_participant() {
    let (mut net, ids, answers) = three_in_800();
    let third = joins(&net)[2].1;
    let call_id = answers[2].call_id().unwrap().to_string();
    let mut reinvite = net.phone(ids[2]).in_dialog(&call_id, Method::Invite);
    let held = PCMA_OFFER.replace("o=103 1 1", "o=103 1 2").to_string() + "a=sendonly\r\n";
    reinvite.set_body(held.into_bytes(), Some("application/sdp"));
    let tx = net.send(ids[2], reinvite);
    net.settle();
    let resp = net.phone(ids[2]).final_response(tx).unwrap();
    assert_eq!(resp.status, 200);
    let sdp = body(&resp);
    assert!(sdp.contains("a=recvonly"), "{sdp}");
    // Same port as before, a newer o= version.
    let m = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("m=audio"))
            .unwrap()
            .to_string()
    };
    assert_eq!(m(&sdp), m(&body(&answers[2])));
    let update = room_events(&net).into_iter().find_map(|c| match c {
        RoomCommand::Update {
            participant, media, ..
        } if participant == third => Some(media),
        _ => None,
    });
    let media = update.expect("no Update for the held participant");
    assert!(!media.send);
    assert_eq!(media.codec.kind, CodecKind::Pcma);
    assert!(net.run_to_quiet(secs(60)));
    assert_eq!(
        rooms(&mut net)[0].1.len(),
        3,
        "the ACK kept them in the room"
    );
}

#[test]
fn a_missing_ack_ends_the_participant() {
    let mut net = net();
    let ids = phones(&mut net);
    net.phone(ids[0]).auto_ack = false;
    let (_, resp) = dial(&mut net, ids[0], "800", support::SDP_OFFER);
    assert_eq!(resp.status, 200);
    assert!(net.run_until(|n| n.phones[ids[0]].count(Method::Bye) == 1, secs(40)));
    assert!(room_events(&net).contains(&RoomCommand::Close { room: "800".into() }));
}

#[test]
fn moderated_rooms_mark_speakers_and_bad_offers_are_refused() {
    let mut net = net();
    let ids = phones(&mut net);
    let (_, a) = dial(&mut net, ids[0], "850", support::SDP_OFFER);
    let (_, b) = dial(&mut net, ids[2], "850", support::SDP_OFFER);
    assert_eq!((a.status, b.status), (200, 200));
    let j = joins(&net);
    assert_eq!(j.iter().map(|x| x.3).collect::<Vec<_>>(), vec![false, true]);
    assert!(room_events(&net).contains(&RoomCommand::Open {
        room: "850".into(),
        moderated: true,
        tones: true,
        rtp_timeout: Duration::from_secs(30),
    }));
    // No SDP, no common codec, garbage SDP: refused, nobody joins.
    let mut no_sdp = net.phone(ids[1]).invite("801");
    no_sdp.body.clear();
    no_sdp
        .headers
        .remove(&switchboard_sip::HeaderName::ContentType);
    let tx = net.send_authenticated(ids[1], no_sdp);
    net.settle();
    assert_eq!(net.phone(ids[1]).final_response(tx).unwrap().status, 488);
    let g729 = support::SDP_OFFER.replace("RTP/AVP 0", "RTP/AVP 18");
    assert_eq!(dial(&mut net, ids[1], "801", &g729).1.status, 488);
    assert_eq!(
        dial(&mut net, ids[1], "801", "v=0\r\nnonsense").1.status,
        400
    );
    assert_eq!(joins(&net).len(), 2);
    // A number outside the range is an ordinary (unknown) number.
    assert_eq!(
        dial(&mut net, ids[1], "900", support::SDP_OFFER).1.status,
        404
    );
    assert_eq!(
        dial(&mut net, ids[1], "0800", support::SDP_OFFER).1.status,
        404
    );
    let _ = DOMAIN;
}

#[test]
fn unauthenticated_callers_are_challenged_before_any_room_logic() {
    let mut net = net();
    let ids = phones(&mut net);
    let invite = net.phone(ids[0]).invite("800");
    let tx = net.send(ids[0], invite);
    net.settle();
    assert_eq!(net.phone(ids[0]).final_response(tx).unwrap().status, 407);
    assert!(joins(&net).is_empty());
}

#[test]
fn shutdown_says_bye_to_every_participant() {
    let (mut net, ids, _) = three_in_800();
    net.shutdown();
    for p in ids {
        assert_eq!(net.phone(p).count(Method::Bye), 1);
    }
    assert!(net.run_to_quiet(secs(60)));
    assert!(net.engine.is_idle());
    assert_eq!(net.engine.conference_participants(), 0);
}

// ---- calling out from a room (RoomAdd) ------------------------------------------------

/// An answer to the room's offer listing Opus before PCMU (as baresip orders its own).
const OPUS_PCMU_ANSWER: &str = "v=0\r\no=102 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40020 RTP/AVP 96 0\r\na=rtpmap:96 opus/48000/2\r\n";
const PCMA_ANSWER: &str = "v=0\r\no=102 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40022 RTP/AVP 8\r\n";

fn room_add(net: &mut Net, room: &str, target: &str) -> Result<CommandReply, CommandError> {
    net.command(Command::RoomAdd {
        room: room.into(),
        target: target.into(),
        auto_answer: true,
    })
}

/// The participant id a call-out will become.
fn added(reply: Result<CommandReply, CommandError>, room: &str) -> u64 {
    match reply {
        Ok(CommandReply::Room {
            room: r,
            participant: Some(id),
        }) if r == room => id,
        other => panic!("{other:?}"),
    }
}

fn call_outs(net: &Net) -> Vec<CallOutReport> {
    net.events
        .iter()
        .filter_map(|e| match e {
            EngineEvent::RoomCallOut(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

/// The INVITEs phone `p` received: (its server transaction, the request).
fn invites(net: &mut Net, p: PhoneId) -> Vec<(ServerTxId, Request)> {
    net.phone(p)
        .requests(Method::Invite)
        .into_iter()
        .map(|(id, r)| (id.unwrap(), r))
        .collect()
}

/// 101 in room 800 (Opus), 102 registered from two devices, 103 registered.
fn room_with_101_and_two_devices_of_102() -> (Net, [PhoneId; 3], PhoneId) {
    let mut net = net();
    let ids = phones(&mut net);
    let second = net.add_phone("102", "secret-102", 5072);
    assert_eq!(net.register(second, 3600).status, 200);
    let (_, resp) = dial(&mut net, ids[0], "800", MULTI_OFFER);
    assert_eq!(resp.status, 200);
    (net, ids, second)
}

#[test]
fn room_add_rings_every_device_and_the_first_answer_joins_the_room() {
    let (mut net, ids, second) = room_with_101_and_two_devices_of_102();
    // By extension: the directory resolves 1102 to user 102.
    let id = added(room_add(&mut net, "800", "1102"), "800");
    let (a, b) = (invites(&mut net, ids[1]), invites(&mut net, second));
    assert_eq!((a.len(), b.len()), (1, 1), "{}", net.wire_log());
    let offer = String::from_utf8(a[0].1.body.clone()).unwrap();
    // Our offer: the participant's port from the pool, every codec we mix, no DTMF.
    assert!(offer.contains("m=audio 300"), "{offer}");
    assert!(
        offer.contains("PCMU/8000")
            && offer.contains("PCMA/8000")
            && offer.contains("opus/48000/2"),
        "{offer}"
    );
    assert!(!offer.contains("telephone-event"), "{offer}");
    assert_eq!(a[0].1.body, b[0].1.body, "one offer for every device");
    assert!(a[0]
        .1
        .from()
        .unwrap()
        .uri
        .to_string()
        .starts_with("sip:800@"));
    assert_eq!(
        a[0].1.headers.get(&HeaderName::Other("Call-Info".into())),
        Some("<sip:example.test>;answer-after=0")
    );
    // Nothing joins while it rings.
    assert!(joins(&net).iter().all(|j| j.1 != id));
    assert_eq!(rooms(&mut net)[0].1.len(), 1);

    net.respond(second, b[0].0, 180, None);
    net.respond(ids[1], a[0].0, 200, Some(OPUS_PCMU_ANSWER));
    // ACKed; the other device is CANCELled (and answers 487).
    assert_eq!(net.phone(ids[1]).count(Method::Ack), 1);
    assert_eq!(net.phone(second).count(Method::Cancel), 1);
    let j: Vec<_> = joins(&net).into_iter().filter(|j| j.1 == id).collect();
    // The codec the device sends: the first of our offer that its answer lists (PCMU),
    // not the first of its answer (Opus).
    assert_eq!(j, vec![("800".to_string(), id, CodecKind::Pcmu, false)]);
    let join = room_events(&net)
        .into_iter()
        .find_map(|c| match c {
            RoomCommand::Join {
                participant, media, ..
            } if participant == id => Some(media),
            _ => None,
        })
        .unwrap();
    assert_eq!(join.remote, Some("127.0.0.1:40020".parse().unwrap()));
    assert_eq!(join.codec.payload_type, 0);
    assert!(join.send);
    assert_eq!(
        call_outs(&net),
        vec![CallOutReport {
            room: "800".into(),
            participant: id,
            user: "102".into(),
            status: 200
        }]
    );
    let listed = rooms(&mut net);
    assert_eq!(
        listed[0]
            .1
            .iter()
            .map(|p| (p.0, p.1.as_str()))
            .collect::<Vec<_>>()[1],
        (id, "102")
    );
    // A device that answers 200 after the CANCEL crossed it: ACKed and hung up.
    assert!(net.run_to_quiet(secs(60)), "{}", net.wire_log());

    // The callee hangs up: they leave the room, the room stays.
    let call_id = a[0].1.call_id().unwrap().to_string();
    let bye = net.phone(ids[1]).in_dialog(&call_id, Method::Bye);
    let tx = net.send(ids[1], bye);
    assert_eq!(net.phone(ids[1]).final_response(tx).unwrap().status, 200);
    assert!(room_events(&net).contains(&RoomCommand::Leave {
        room: "800".into(),
        participant: id
    }));
    assert_eq!(rooms(&mut net)[0].1.len(), 1);
}

#[test]
fn a_lost_ack_is_sent_again_for_the_retransmitted_2xx() {
    let (mut net, ids, _) = room_with_101_and_two_devices_of_102();
    let id = added(room_add(&mut net, "800", "103"), "800");
    let mut first = true;
    net.drop_when(move |d| {
        let ack = d.data.starts_with(b"ACK ") && d.to.addr.port() == 5063;
        let drop = ack && first;
        if drop {
            first = false;
        }
        drop
    });
    let (tx, _) = invites(&mut net, ids[2]).remove(0);
    net.respond(ids[2], tx, 200, Some(PCMA_ANSWER));
    assert_eq!(net.phone(ids[2]).count(Method::Ack), 0);
    // The phone retransmits its 2xx until the ACK comes; ours is sent again.
    assert!(
        net.run_until(|n| n.phones[ids[2]].count(Method::Ack) == 1, secs(5)),
        "{}",
        net.wire_log()
    );
    assert!(net.run_to_quiet(secs(60)), "{}", net.wire_log());
    assert_eq!(net.phone(ids[2]).count(Method::Ack), 1);
    assert_eq!(net.phone(ids[2]).count(Method::Bye), 0);
    assert!(joins(&net)
        .iter()
        .any(|j| j.1 == id && j.2 == CodecKind::Pcma && !j.3));
}

#[test]
fn a_late_2xx_from_a_cancelled_device_is_acked_and_hung_up() {
    let (mut net, ids, second) = room_with_101_and_two_devices_of_102();
    let id = added(room_add(&mut net, "800", "102"), "800");
    // The second device answers the CANCEL but had already sent its 200.
    net.phone(second).auto_cancel = false;
    let (a, b) = (invites(&mut net, ids[1]), invites(&mut net, second));
    net.respond(second, b[0].0, 180, None);
    net.respond(ids[1], a[0].0, 200, Some(PCMA_ANSWER));
    assert_eq!(net.phone(second).count(Method::Cancel), 1);
    net.respond(second, b[0].0, 200, Some(OPUS_PCMU_ANSWER));
    assert!(
        net.run_until(|n| n.phones[second].count(Method::Bye) == 1, secs(5)),
        "{}",
        net.wire_log()
    );
    assert_eq!(net.phone(second).count(Method::Ack), 1);
    // Only the winner joined.
    assert_eq!(
        joins(&net).iter().filter(|j| j.1 == id).count(),
        1,
        "{:?}",
        joins(&net)
    );
    assert_eq!(net.phone(ids[1]).count(Method::Bye), 0);
    assert_eq!(rooms(&mut net)[0].1.len(), 2);
    assert!(net.run_to_quiet(secs(60)), "{}", net.wire_log());
}

#[test]
fn busy_and_unanswered_call_outs_leave_the_room_as_it_was() {
    let (mut net, ids, second) = room_with_101_and_two_devices_of_102();
    let busy = added(room_add(&mut net, "800", "102"), "800");
    let (a, b) = (invites(&mut net, ids[1]), invites(&mut net, second));
    net.respond(ids[1], a[0].0, 486, None);
    assert!(call_outs(&net).is_empty(), "the other device still rings");
    net.respond(second, b[0].0, 603, None);
    assert_eq!(
        call_outs(&net),
        vec![CallOutReport {
            room: "800".into(),
            participant: busy,
            user: "102".into(),
            status: 603
        }]
    );
    // Nobody answers: CANCEL at the engine's ring timeout (30 s here).
    let start = net.now;
    let silent = added(room_add(&mut net, "800", "103"), "800");
    let (c, _) = invites(&mut net, ids[2]).remove(0);
    net.respond(ids[2], c, 180, None);
    assert!(net.run_until(|n| n.phones[ids[2]].count(Method::Cancel) == 1, secs(40)));
    assert_eq!(net.now - start, secs(30));
    assert_eq!(call_outs(&net).last().unwrap().participant, silent);
    assert_eq!(call_outs(&net).last().unwrap().status, 408);
    assert!(!call_outs(&net).iter().any(CallOutReport::joined));
    // The room is as it was: one participant, never told about the call-outs.
    let listed = rooms(&mut net);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].1.len(), 1);
    assert!(!room_events(&net).iter().any(|c| matches!(
        c,
        RoomCommand::Join { participant, .. } | RoomCommand::Leave { participant, .. }
            if *participant == busy || *participant == silent
    )));
    // A new call-out to the same user works: nothing was left behind.
    let again = added(room_add(&mut net, "800", "103"), "800");
    let (c, _) = invites(&mut net, ids[2]).pop().unwrap();
    net.respond(ids[2], c, 200, Some(PCMA_ANSWER));
    assert!(joins(&net).iter().any(|j| j.1 == again));
    assert!(net.run_to_quiet(secs(60)), "{}", net.wire_log());
}

#[test]
fn room_add_refuses_unknown_rooms_users_and_unreachable_ones() {
    let (mut net, _, _) = room_with_101_and_two_devices_of_102();
    let err = room_add(&mut net, "900", "102").unwrap_err();
    assert_eq!(err, CommandError::NoSuchRoom("900".into()));
    assert_eq!(err.http_status(), 404);
    let err = room_add(&mut net, "800", "nobody").unwrap_err();
    assert_eq!(err, CommandError::NoSuchUser("nobody".into()));
    assert_eq!(err.http_status(), 404);
    // 101 is in the room already; a second call-out to someone ringing is refused too.
    assert_eq!(
        room_add(&mut net, "800", "101").unwrap_err().http_status(),
        409
    );
    added(room_add(&mut net, "800", "103"), "800");
    assert_eq!(
        room_add(&mut net, "800", "103").unwrap_err().http_status(),
        409
    );
    // A user with no registered device.
    let mut net2 = self::net();
    let err = room_add(&mut net2, "801", "103").unwrap_err();
    assert_eq!(err, CommandError::NotRegistered("103".into()));
    assert_eq!(err.http_status(), 409);
    assert!(net2
        .events
        .iter()
        .all(|e| !matches!(e, EngineEvent::Room(_))));
}

#[test]
fn a_call_out_to_an_empty_room_opens_it() {
    let mut net = net();
    let ids = phones(&mut net);
    let id = added(room_add(&mut net, "851", "103"), "851");
    assert!(
        rooms(&mut net).is_empty(),
        "nothing opens before the answer"
    );
    let (tx, _) = invites(&mut net, ids[2]).remove(0);
    net.respond(ids[2], tx, 200, Some(PCMA_ANSWER));
    let events = room_events(&net);
    assert!(
        matches!(
            &events[..],
            [RoomCommand::Open { room, moderated: true, .. }, RoomCommand::Join { participant, media, .. }]
                if room == "851" && *participant == id && media.speaker
        ),
        "{events:?}"
    );
    assert_eq!(rooms(&mut net)[0].1[0].1, "103");
}

#[test]
fn an_answer_without_usable_audio_is_hung_up() {
    let (mut net, ids, _) = room_with_101_and_two_devices_of_102();
    let id = added(room_add(&mut net, "800", "103"), "800");
    let (tx, _) = invites(&mut net, ids[2]).remove(0);
    let g729 = PCMA_ANSWER.replace("RTP/AVP 8", "RTP/AVP 18");
    net.respond(ids[2], tx, 200, Some(&g729));
    assert_eq!(net.phone(ids[2]).count(Method::Ack), 1);
    assert_eq!(net.phone(ids[2]).count(Method::Bye), 1);
    assert_eq!(call_outs(&net).last().unwrap().status, 488);
    assert!(!joins(&net).iter().any(|j| j.1 == id));
    assert!(net.run_to_quiet(secs(60)), "{}", net.wire_log());
}

#[test]
fn kick_and_shutdown_cancel_ringing_call_outs() {
    let (mut net, ids, second) = room_with_101_and_two_devices_of_102();
    let kicked = added(room_add(&mut net, "800", "103"), "800");
    let (tx, _) = invites(&mut net, ids[2]).remove(0);
    net.respond(ids[2], tx, 180, None);
    assert_eq!(
        net.command(Command::RoomKick {
            room: "800".into(),
            participant: kicked
        }),
        Ok(CommandReply::Accepted)
    );
    assert_eq!(net.phone(ids[2]).count(Method::Cancel), 1);
    assert_eq!(call_outs(&net).last().unwrap().status, 487);

    // Shutdown while 102's devices ring: CANCELled (one before any provisional: the
    // CANCEL waits for it), everything ends, the engine goes idle.
    let ringing = added(room_add(&mut net, "800", "102"), "800");
    let (a, _) = invites(&mut net, ids[1]).remove(0);
    net.respond(ids[1], a, 180, None);
    net.shutdown();
    assert_eq!(net.phone(ids[1]).count(Method::Cancel), 1);
    let (b, _) = invites(&mut net, second).remove(0);
    net.respond(second, b, 180, None);
    assert_eq!(net.phone(second).count(Method::Cancel), 1);
    let last = call_outs(&net).last().cloned().unwrap();
    assert_eq!((last.participant, last.status), (ringing, 503));
    assert_eq!(net.phone(ids[0]).count(Method::Bye), 1);
    assert!(net.run_to_quiet(secs(60)), "{}", net.wire_log());
    assert!(net.engine.is_idle());
    assert!(rooms(&mut net).is_empty());
}

/// An ad hoc conference from a live call: both parties are re-INVITEd toward room ports,
/// leave the call and become participants; the call ends; BYE from one leaves the room.
#[test]
fn a_live_call_becomes_a_conference_and_a_third_party_dials_in() {
    let mut net = net();
    let [p1, p2, p3] = phones(&mut net);
    // 101 calls 102, who answers.
    let invite = net.phone(p1).invite("102");
    let a_id = invite.call_id().unwrap().to_string();
    let tx = net.send_authenticated(p1, invite);
    let (id, inv) = net.phone(p2).last_request(Method::Invite);
    let b_id = inv.call_id().unwrap().to_string();
    net.respond(p2, id.unwrap(), 200, Some(support::SDP_ANSWER));
    assert_eq!(net.phone(p1).final_response(tx).unwrap().status, 200);
    let now = net.now;
    let CommandReply::Calls(calls) = net.engine.handle_command(Command::ListCalls, now).unwrap()
    else {
        panic!()
    };
    let call = calls[0].call;
    // Not a room number: 404; then into the first free room.
    assert!(matches!(
        net.command(Command::RoomFromCall {
            call,
            room: Some("123".into())
        }),
        Err(CommandError::NoSuchRoom(_))
    ));
    let reply = net
        .command(Command::RoomFromCall { call, room: None })
        .unwrap();
    assert_eq!(
        reply,
        CommandReply::Room {
            room: "800".into(),
            participant: None
        }
    );
    // Each party gets a re-INVITE in its own dialog, with our offer.
    for (p, dialog) in [(p1, &a_id), (p2, &b_id)] {
        let reinvites: Vec<Request> = net
            .phone(p)
            .requests(Method::Invite)
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| r.call_id().unwrap() == dialog && r.to().unwrap().tag().is_some())
            .collect();
        assert_eq!(reinvites.len(), 1, "{}", net.wire_log());
        let (id, _) = net.phone(p).last_request(Method::Invite);
        net.respond(p, id.unwrap(), 200, Some(support::SDP_ANSWER));
    }
    assert_eq!(joins(&net).len(), 2, "{:?}", room_events(&net));
    assert_eq!(net.engine.stats().active_calls, 0, "the call is over");
    let listing = rooms(&mut net);
    assert_eq!(listing.len(), 1);
    assert_eq!(listing[0].0, "800");
    assert_eq!(listing[0].1.len(), 2);
    // A third party dials the room.
    let (_, ok) = dial(&mut net, p3, "800", PCMA_OFFER);
    assert_eq!(ok.status, 200);
    assert_eq!(rooms(&mut net)[0].1.len(), 3);
    // 102 hangs up in its original dialog: it leaves the room (not 481).
    let bye = net.phone(p2).in_dialog(&b_id, Method::Bye);
    let bye_tx = net.send(p2, bye);
    assert_eq!(net.phone(p2).statuses(bye_tx), vec![200]);
    assert_eq!(rooms(&mut net)[0].1.len(), 2);
}

// ---------------------------------------------------------------------------
// A phone's conference button: the conference factory and REFERs into the room.

/// `from` calls user `to` on phone `callee`, who answers; the Call-IDs on both sides.
fn call(net: &mut Net, from: PhoneId, to: &str, callee: PhoneId) -> (String, String) {
    let invite = net.phone(from).invite(to);
    let a_id = invite.call_id().unwrap().to_string();
    let tx = net.send_authenticated(from, invite);
    let (id, inv) = net.phone(callee).last_request(Method::Invite);
    let b_id = inv.call_id().unwrap().to_string();
    net.respond(callee, id.unwrap(), 200, Some(support::SDP_ANSWER));
    assert_eq!(
        net.phone(from).final_response(tx).unwrap().status,
        200,
        "{}",
        net.wire_log()
    );
    (a_id, b_id)
}

/// Phone `p` sends REFER in dialog `call_id` with `refer_to`; the statuses it got.
fn refer(net: &mut Net, p: PhoneId, call_id: &str, refer_to: &str) -> Vec<u16> {
    let mut req = net.phone(p).in_dialog(call_id, Method::Refer);
    req.headers.push(HeaderName::ReferTo, refer_to.to_string());
    let tx = net.send(p, req);
    net.phone(p).statuses(tx)
}

/// Requests of `method` phone `p` got in dialog `call_id`.
fn got(
    net: &mut Net,
    p: PhoneId,
    method: Method,
    call_id: &str,
) -> Vec<(Option<ServerTxId>, Request)> {
    net.phone(p)
        .requests(method)
        .into_iter()
        .filter(|(_, r)| r.call_id().unwrap() == call_id)
        .collect()
}

/// The sipfrag status lines of the NOTIFYs phone `p` got in dialog `call_id`.
fn notified(net: &mut Net, p: PhoneId, call_id: &str) -> Vec<String> {
    got(net, p, Method::Notify, call_id)
        .into_iter()
        .map(|(_, r)| {
            assert_eq!(r.headers.get(&HeaderName::Event), Some("refer"));
            String::from_utf8_lossy(&r.body).trim_end().to_string()
        })
        .collect()
}

/// The re-INVITE phone `p` got in dialog `call_id` (one with a To tag), answered with
/// `status` (and our SDP answer for a 2xx).
fn answer_reinvite(net: &mut Net, p: PhoneId, call_id: &str, status: u16) -> Request {
    let reinvites: Vec<(Option<ServerTxId>, Request)> = got(net, p, Method::Invite, call_id)
        .into_iter()
        .filter(|(_, r)| r.to().unwrap().tag().is_some())
        .collect();
    assert_eq!(reinvites.len(), 1, "{}", net.wire_log());
    let (id, req) = reinvites[0].clone();
    let body = (status < 300).then_some(support::SDP_ANSWER);
    net.respond(p, id.unwrap(), status, body);
    req
}

fn moved_to_room(net: &Net) -> Vec<String> {
    net.events
        .iter()
        .filter_map(|e| match e {
            EngineEvent::History {
                event: switchboard_core::CallHistory::MovedToRoom { room, .. },
                ..
            } => Some(room.clone()),
            _ => None,
        })
        .collect()
}

/// The phone of 101 talks to 102 and to 103 (two calls), then presses its conference
/// button in "network conference" mode: it INVITEs the factory, gets the room as the
/// focus, and REFERs each call to the focus URI. 102 and 103 are moved into the room by
/// a re-INVITE each, 101's legs of the two calls are released, and the calls end.
#[test]
fn the_conference_factory_opens_a_room_and_refers_to_the_focus_move_the_calls_in() {
    let mut net = net();
    let [p1, p2, p3] = phones(&mut net);
    let (a1, b1) = call(&mut net, p1, "102", p2);
    let (a2, b2) = call(&mut net, p1, "103", p3);
    assert_eq!(net.engine.stats().active_calls, 2);

    let (_, ok) = dial(&mut net, p1, "conf", support::SDP_OFFER);
    assert_eq!(ok.status, 200, "{}", net.wire_log());
    let focus = ok.headers.get(&HeaderName::Contact).unwrap().to_string();
    assert_eq!(focus, "<sip:800@127.0.0.1:5060>;isfocus");
    assert_eq!(
        rooms(&mut net)[0].1.len(),
        1,
        "the caller is the first participant"
    );

    // Refer-To is the focus URI from that Contact (isfocus inside the brackets).
    for (a, b, p, n) in [(&a1, &b1, p2, 2), (&a2, &b2, p3, 3)] {
        let statuses = refer(&mut net, p1, a, "<sip:800@127.0.0.1:5060;isfocus>");
        assert_eq!(statuses, vec![202], "{}", net.wire_log());
        let reinvite = answer_reinvite(&mut net, p, b, 200);
        let offer = String::from_utf8_lossy(&reinvite.body).into_owned();
        assert!(offer.contains("m=audio 300"), "{offer}");
        // The call's ACK, then ours for the re-INVITE's 2xx.
        assert_eq!(
            got(&mut net, p, Method::Ack, b).len(),
            2,
            "{}",
            net.wire_log()
        );
        assert_eq!(
            notified(&mut net, p1, a),
            vec!["SIP/2.0 100 Trying", "SIP/2.0 200 OK"]
        );
        assert_eq!(
            got(&mut net, p1, Method::Bye, a).len(),
            1,
            "{}",
            net.wire_log()
        );
        assert!(got(&mut net, p, Method::Bye, b).is_empty());
        assert_eq!(rooms(&mut net)[0].1.len(), n);
    }
    assert_eq!(net.engine.stats().active_calls, 0, "both calls ended");
    assert_eq!(moved_to_room(&net), vec!["800", "800"]);
    let listing = rooms(&mut net);
    assert_eq!(listing[0].0, "800");
    assert_eq!(
        listing[0]
            .1
            .iter()
            .map(|p| p.1.as_str())
            .collect::<Vec<_>>(),
        vec!["101", "102", "103"]
    );
    // 102 hangs up in its old dialog, which is now the room's.
    let bye = net.phone(p2).in_dialog(&b1, Method::Bye);
    let tx = net.send(p2, bye);
    assert_eq!(net.phone(p2).statuses(tx), vec![200]);
    assert_eq!(rooms(&mut net)[0].1.len(), 2);
    assert!(net.run_to_quiet(secs(120)), "{}", net.wire_log());
}

/// The REFER names a room by its number; the party refuses the re-INVITE: the referrer
/// hears why, nobody is hung up, and the call goes on.
#[test]
fn a_party_that_refuses_the_move_into_the_room_stays_in_its_call() {
    let mut net = net();
    let [p1, p2, _] = phones(&mut net);
    let (a1, b1) = call(&mut net, p1, "102", p2);
    assert_eq!(
        refer(&mut net, p1, &a1, "<sip:805@example.test>"),
        vec![202]
    );
    answer_reinvite(&mut net, p2, &b1, 488);
    assert_eq!(
        notified(&mut net, p1, &a1),
        vec!["SIP/2.0 100 Trying", "SIP/2.0 488 Not Acceptable Here"]
    );
    assert!(got(&mut net, p1, Method::Bye, &a1).is_empty());
    assert!(rooms(&mut net).is_empty(), "nobody joined");
    assert_eq!(net.engine.stats().active_calls, 1);
    assert!(moved_to_room(&net).is_empty());
    // The call is as it was: a BYE from 102 reaches 101.
    let bye = net.phone(p2).in_dialog(&b1, Method::Bye);
    net.send(p2, bye);
    assert_eq!(got(&mut net, p1, Method::Bye, &a1).len(), 1);
    assert_eq!(net.engine.stats().active_calls, 0);
}

/// The factory takes the first room nobody is in, and says 503 when there is none.
#[test]
fn the_factory_takes_a_free_room_and_is_busy_when_there_is_none() {
    let mut net = net();
    let [p1, p2, p3] = phones(&mut net);
    let (_, in_800) = dial(&mut net, p2, "800", support::SDP_OFFER);
    assert_eq!(in_800.status, 200);
    let (_, ok) = dial(&mut net, p1, "CONF", support::SDP_OFFER);
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.headers.get(&HeaderName::Contact),
        Some("<sip:801@127.0.0.1:5060>;isfocus")
    );
    let (_, again) = dial(&mut net, p3, "conf", support::SDP_OFFER);
    assert_eq!(
        again.headers.get(&HeaderName::Contact),
        Some("<sip:802@127.0.0.1:5060>;isfocus")
    );

    let mut cfg = config(vec![Algorithm::Md5]);
    cfg.media =
        Some(MediaConfig::new("127.0.0.1".into(), 30000, 30099, Duration::from_secs(30)).unwrap());
    cfg.conference = Some(ConferenceConfig {
        rooms: vec!["800".parse().unwrap()],
        moderated: Vec::new(),
        speakers: Vec::new(),
        tones: false,
        factory: Some("conf".into()),
    });
    let mut small = Net::new(
        cfg,
        vec![
            user("101", None, "secret-101"),
            user("102", None, "secret-102"),
        ],
    );
    let a = small.add_phone("101", "secret-101", 5061);
    let b = small.add_phone("102", "secret-102", 5062);
    for p in [a, b] {
        assert_eq!(small.register(p, 3600).status, 200);
    }
    assert_eq!(
        dial(&mut small, a, "conf", support::SDP_OFFER).1.status,
        200
    );
    let (_, busy) = dial(&mut small, b, "conf", support::SDP_OFFER);
    assert_eq!(busy.status, 503, "{}", small.wire_log());
}

/// RFC 4579's other form: the phone REFERs the focus, in its own dialog with the room,
/// to the party of another of its calls, with Replaces naming that call's dialog. The
/// party is moved into the room and the phone's leg of that call is released. Replaces
/// naming someone else's call is refused; without Replaces the room calls the user out.
#[test]
fn a_refer_to_the_focus_with_replaces_brings_in_the_other_party_of_that_call() {
    let mut net = net();
    let [p1, p2, p3] = phones(&mut net);
    let (a1, b1) = call(&mut net, p1, "102", p2);
    let (tx, ok) = dial(&mut net, p1, "conf", support::SDP_OFFER);
    assert_eq!(ok.status, 200);
    let _ = tx;
    let focus = ok.call_id().unwrap().to_string();
    let leg = net.phone(p1).legs[&a1].clone();
    let replaces = format!(
        "{}%3Bto-tag%3D{}%3Bfrom-tag%3D{}",
        a1.replace('@', "%40"),
        leg.remote_tag.clone().unwrap(),
        leg.local_tag
    );
    // Not a dialog of ours: 481; someone else's call: 403.
    assert_eq!(
        refer(
            &mut net,
            p1,
            &focus,
            "<sip:102@example.test?Replaces=nope%3Bto-tag%3Dx%3Bfrom-tag%3Dy>"
        ),
        vec![481]
    );
    let (c_a, _) = call(&mut net, p3, "102", p2);
    let other = net.phone(p3).legs[&c_a].clone();
    let theirs = format!(
        "{}%3Bto-tag%3D{}%3Bfrom-tag%3D{}",
        c_a.replace('@', "%40"),
        other.remote_tag.clone().unwrap(),
        other.local_tag
    );
    assert_eq!(
        refer(
            &mut net,
            p1,
            &focus,
            &format!("<sip:102@example.test?Replaces={theirs}>")
        ),
        vec![403]
    );

    let statuses = refer(
        &mut net,
        p1,
        &focus,
        &format!("<sip:102@example.test?Replaces={replaces}>"),
    );
    assert_eq!(statuses, vec![202], "{}", net.wire_log());
    answer_reinvite(&mut net, p2, &b1, 200);
    assert_eq!(
        notified(&mut net, p1, &focus),
        vec!["SIP/2.0 100 Trying", "SIP/2.0 200 OK"]
    );
    assert_eq!(
        got(&mut net, p1, Method::Bye, &a1).len(),
        1,
        "{}",
        net.wire_log()
    );
    assert_eq!(
        rooms(&mut net)[0]
            .1
            .iter()
            .map(|p| p.1.as_str())
            .collect::<Vec<_>>(),
        vec!["101", "102"]
    );

    // Without Replaces: 103 is called out into the room and joins.
    let before = net.phone(p3).count(Method::Invite);
    assert_eq!(
        refer(&mut net, p1, &focus, "<sip:103@example.test>"),
        vec![202]
    );
    assert_eq!(net.phone(p3).count(Method::Invite), before + 1);
    let (id, _) = net.phone(p3).last_request(Method::Invite);
    net.respond(p3, id.unwrap(), 200, Some(support::SDP_ANSWER));
    assert_eq!(
        notified(&mut net, p1, &focus),
        vec![
            "SIP/2.0 100 Trying",
            "SIP/2.0 200 OK",
            "SIP/2.0 100 Trying",
            "SIP/2.0 200 OK"
        ]
    );
    assert_eq!(rooms(&mut net)[0].1.len(), 3);
    assert_eq!(
        refer(&mut net, p1, &focus, "<sip:999@example.test>"),
        vec![404]
    );
}

/// The API's blind transfer to a room number: the party that stays is moved into the
/// room, the other is released once it is in.
#[test]
fn a_blind_transfer_by_the_api_to_a_room_moves_the_staying_party_in() {
    let mut net = net();
    let [p1, p2, _] = phones(&mut net);
    let (a1, b1) = call(&mut net, p1, "102", p2);
    let now = net.now;
    let CommandReply::Calls(calls) = net.engine.handle_command(Command::ListCalls, now).unwrap()
    else {
        panic!()
    };
    let reply = net.command(Command::BlindTransfer {
        call: calls[0].call,
        party: switchboard_core::Party::Caller,
        target: "801".into(),
    });
    assert_eq!(reply, Ok(CommandReply::Accepted));
    answer_reinvite(&mut net, p1, &a1, 200);
    assert_eq!(
        got(&mut net, p2, Method::Bye, &b1).len(),
        1,
        "{}",
        net.wire_log()
    );
    assert!(got(&mut net, p1, Method::Bye, &a1).is_empty());
    let listing = rooms(&mut net);
    assert_eq!(listing[0].0, "801");
    assert_eq!(listing[0].1[0].1, "101");
    assert_eq!(net.engine.stats().active_calls, 0);
}

/// The referrer hangs up right after its REFER (before the party accepted the move): the
/// move goes on, the party joins the room, and the call ends without anyone else.
#[test]
fn the_referrer_may_hang_up_before_the_move_into_the_room_is_done() {
    let mut net = net();
    let [p1, p2, _] = phones(&mut net);
    let (a1, b1) = call(&mut net, p1, "102", p2);
    assert_eq!(
        refer(&mut net, p1, &a1, "<sip:800@example.test>"),
        vec![202]
    );
    let bye = net.phone(p1).in_dialog(&a1, Method::Bye);
    let tx = net.send(p1, bye);
    assert_eq!(net.phone(p1).statuses(tx), vec![200]);
    assert!(
        got(&mut net, p2, Method::Bye, &b1).is_empty(),
        "{}",
        net.wire_log()
    );
    answer_reinvite(&mut net, p2, &b1, 200);
    assert_eq!(rooms(&mut net)[0].1.len(), 1, "{}", net.wire_log());
    assert_eq!(net.engine.stats().active_calls, 0);
    assert!(got(&mut net, p1, Method::Bye, &a1).is_empty());
    assert!(got(&mut net, p2, Method::Bye, &b1).is_empty());

    // The same with a refusal: the party left in the call is hung up.
    let (a2, b2) = call(&mut net, p1, "102", p2);
    assert_eq!(
        refer(&mut net, p1, &a2, "<sip:801@example.test>"),
        vec![202]
    );
    let bye = net.phone(p1).in_dialog(&a2, Method::Bye);
    net.send(p1, bye);
    answer_reinvite(&mut net, p2, &b2, 486);
    assert_eq!(
        got(&mut net, p2, Method::Bye, &b2).len(),
        1,
        "{}",
        net.wire_log()
    );
    assert_eq!(net.engine.stats().active_calls, 0);
    assert!(net.run_to_quiet(secs(120)), "{}", net.wire_log());
}
