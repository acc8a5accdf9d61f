//! Conference rooms in the engine, in simulated time: dialling a room number is answered
//! by Switchboard itself, participants join and leave, and the room commands (list, mute,
//! kick) act on them. What the runtime is told is checked through `EngineEvent::Room`.
//! (The audio itself is tested in `switchboard_media::mixer` and end to end in
//! `tests/e2e_conference.rs`.)

mod support;

use std::time::Duration;

use switchboard_core::command::{Command, CommandError, CommandReply};
use switchboard_core::conference::{ConferenceConfig, RoomCommand};
use switchboard_core::media::MediaConfig;
use switchboard_core::EngineEvent;
use switchboard_media::codec::CodecKind;
use switchboard_sip::transaction::ClientTxId;
use switchboard_sip::{Method, Response};

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
