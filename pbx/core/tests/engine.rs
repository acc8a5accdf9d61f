//! Scenario tests of the engine in simulated time: the registrar with digest auth and the
//! B2BUA, driven exactly as the runtime drives it (datagram in, drain transmits and events,
//! advance to the next deadline), against simulated phones on an in-memory network.

mod support;

use switchboard_core::auth::AuthFailure;
use switchboard_core::{BindingChange, CallOutcome, EngineEvent};
use switchboard_sip::digest::{self, Algorithm, Credentials, Qop};
use switchboard_sip::transaction::ClientTxId;
use switchboard_sip::{HeaderName, Message, Method, NameAddr, Request, Response};

use support::{parse_challenge, secs, udp, Net, PhoneId, Seen, ENGINE_PORT, SDP_ANSWER, SDP_OFFER};

const CALLER_PORT: u16 = 5061;
const DEV1_PORT: u16 = 5071;
const DEV2_PORT: u16 = 5072;

fn to_tag(resp: &Response) -> Option<String> {
    resp.to().unwrap().tag().map(str::to_string)
}

fn contacts(resp: &Response) -> Vec<NameAddr> {
    resp.headers
        .get_all(&HeaderName::Contact)
        .map(|c| NameAddr::parse(c).unwrap())
        .collect()
}

fn body(req: &Request) -> &str {
    std::str::from_utf8(&req.body).unwrap()
}

/// 101 on one phone; 102 on two devices (two contacts, two source ports).
struct Call {
    net: Net,
    caller: PhoneId,
    dev1: PhoneId,
    dev2: PhoneId,
}

fn registered() -> Call {
    let mut net = Net::standard();
    let caller = net.add_phone("101", "secret-101", CALLER_PORT);
    let dev1 = net.add_phone("102", "secret-102", DEV1_PORT);
    let dev2 = net.add_phone("102", "secret-102", DEV2_PORT);
    for p in [caller, dev1, dev2] {
        assert_eq!(net.register(p, 3600).status, 200);
    }
    assert_eq!(net.engine.stats().registrations, 3);
    Call {
        net,
        caller,
        dev1,
        dev2,
    }
}

/// 101 calls 102 (answering the 407); returns the INVITE transaction once both devices
/// have the INVITE.
fn ring(c: &mut Call) -> ClientTxId {
    let invite = c.net.phone(c.caller).invite("102");
    let first = c.net.send(c.caller, invite.clone());
    let challenge = c.net.phone(c.caller).final_response(first).unwrap();
    assert_eq!(challenge.status, 407, "{}", c.net.wire_log());
    assert!(challenge
        .headers
        .get(&HeaderName::ProxyAuthenticate)
        .is_some());
    let retry = c.net.phone(c.caller).authorize(&invite, &challenge);
    let tx = c.net.send(c.caller, retry);
    let (dev1, dev2) = (c.dev1, c.dev2);
    assert!(
        c.net.run_until(
            |n| n.phones[dev1].count(Method::Invite) == 1
                && n.phones[dev2].count(Method::Invite) == 1,
            secs(40)
        ),
        "{}",
        c.net.wire_log()
    );
    tx
}

/// Device `dev` answers its INVITE with `status` (an SDP answer with a 2xx).
fn answer(c: &mut Call, dev: PhoneId, status: u16) {
    let (id, _) = c.net.phone(dev).last_request(Method::Invite);
    let body = (200..300).contains(&status).then_some(SDP_ANSWER);
    c.net.respond(dev, id.unwrap(), status, body);
}

/// The B-leg Call-ID that device `dev` saw.
fn b_call_id(c: &mut Call, dev: PhoneId) -> String {
    let (_, inv) = c.net.phone(dev).last_request(Method::Invite);
    inv.call_id().unwrap().to_string()
}

/// Rings, device 2 answers, the caller ACKs: an established call.
fn established() -> (Call, ClientTxId) {
    let mut c = registered();
    let tx = ring(&mut c);
    let (caller, dev2) = (c.caller, c.dev2);
    answer(&mut c, dev2, 200);
    assert!(c.net.run_until(
        |n| n.phones[caller].final_response(tx).is_some() && n.phones[dev2].count(Method::Ack) == 1,
        secs(40)
    ));
    (c, tx)
}

// ---- 1. registrar -------------------------------------------------------------------

#[test]
fn digest_helper_matches_rfc_2617_example() {
    // Guards the test's own client side: RFC 2617 §3.5's worked example.
    let creds = Credentials {
        username: "Mufasa".into(),
        realm: "testrealm@host.com".into(),
        nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093".into(),
        uri: "/dir/index.html".into(),
        response: String::new(),
        algorithm: Algorithm::Md5,
        cnonce: Some("0a4f113b".into()),
        opaque: None,
        qop: Some(Qop::Auth),
        nc: Some("00000001".into()),
    };
    let ha1 = digest::ha1(
        Algorithm::Md5,
        "Mufasa",
        "testrealm@host.com",
        "Circle Of Life",
    );
    assert_eq!(
        digest::expected_response(&creds, "GET", &ha1),
        "6629fae49393a05397450978507c4ef1"
    );
}

#[test]
fn register_challenge_then_bind() {
    let mut net = Net::standard();
    let p = net.add_phone("101", "secret-101", CALLER_PORT);
    let req = net.phone(p).register(3600);
    let tx = net.send(p, req.clone());
    let challenge = net.phone(p).final_response(tx).expect("an answer");
    assert_eq!(challenge.status, 401);
    let offers: Vec<_> = challenge
        .headers
        .get_all(&HeaderName::WwwAuthenticate)
        .map(parse_challenge)
        .collect();
    assert_eq!(offers.len(), 1, "MD5 only by default");
    assert_eq!(offers[0]["algorithm"], "MD5");
    assert_eq!(offers[0]["realm"], "example.test");
    assert_eq!(offers[0]["qop"], "auth");
    assert!(!offers[0].contains_key("stale"));
    // The first leg of every digest exchange is not a failure.
    assert!(net.events.is_empty(), "{:?}", net.events);
    assert_eq!(net.engine.stats().auth_failures, 0);

    let retry = net.phone(p).authorize(&req, &challenge);
    let tx = net.send(p, retry);
    let ok = net.phone(p).final_response(tx).unwrap();
    assert_eq!(ok.status, 200);
    let listed = contacts(&ok);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].uri.to_string(), "sip:101@127.0.0.1:5061");
    assert_eq!(listed[0].expires(), Some(3600));
    assert_eq!(net.engine.stats().registrations, 1);
    let upserts =
        net.events_where(|e| matches!(e, EngineEvent::Binding(BindingChange::Upserted(_))));
    let [EngineEvent::Binding(BindingChange::Upserted(b))] = upserts.as_slice() else {
        panic!("one upsert expected: {:?}", net.events);
    };
    assert_eq!(b.aor, "101");
    assert_eq!(b.contact, "sip:101@127.0.0.1:5061");
    assert_eq!(b.source, udp(CALLER_PORT));
    assert_eq!(b.expires_at, support::START_UNIX + 3600);

    // The same nonce with the next nonce count is accepted without a new challenge.
    let mut again = net.phone(p).register(3600);
    let creds = net.phone(p).credentials(&again, None);
    again.headers.push(HeaderName::Authorization, creds);
    let tx = net.send(p, again);
    assert_eq!(net.phone(p).statuses(tx), vec![200]);
}

#[test]
fn register_with_sha256_offered_second() {
    let mut net = Net::with_algorithms(vec![Algorithm::Md5, Algorithm::Sha256]);
    let p = net.add_phone("102", "secret-102", DEV1_PORT);
    net.phone(p).prefer = Algorithm::Sha256;
    let req = net.phone(p).register(600);
    let tx = net.send(p, req.clone());
    let challenge = net.phone(p).final_response(tx).unwrap();
    let algs: Vec<String> = challenge
        .headers
        .get_all(&HeaderName::WwwAuthenticate)
        .map(|v| parse_challenge(v)["algorithm"].clone())
        .collect();
    assert_eq!(
        algs,
        vec!["MD5", "SHA-256"],
        "MD5 must come first (interop)"
    );
    let retry = net.phone(p).authorize(&req, &challenge);
    assert!(retry
        .headers
        .get(&HeaderName::Authorization)
        .unwrap()
        .contains("algorithm=SHA-256"));
    let tx = net.send(p, retry);
    let ok = net.phone(p).final_response(tx).unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(contacts(&ok)[0].expires(), Some(600));

    // MD5 still works on the same server.
    let md5 = net.add_phone("101", "secret-101", CALLER_PORT);
    assert_eq!(net.register(md5, 600).status, 200);
    assert_eq!(net.engine.stats().registrations, 2);
}

#[test]
fn register_wrong_password_is_challenged_and_reported() {
    let mut net = Net::standard();
    let p = net.add_phone("101", "secret-101", CALLER_PORT);
    let req = net.phone(p).register(3600);
    let tx = net.send(p, req.clone());
    let challenge = net.phone(p).final_response(tx).unwrap();
    let mut bad = net.phone(p).authorize(&req, &challenge);
    let wrong = net.phone(p).credentials(&bad, Some("guess"));
    bad.headers.set(HeaderName::Authorization, wrong);
    let tx = net.send(p, bad);
    let resp = net.phone(p).final_response(tx).unwrap();
    assert_eq!(resp.status, 401);
    let again = parse_challenge(resp.headers.get(&HeaderName::WwwAuthenticate).unwrap());
    assert!(
        !again.contains_key("stale"),
        "a wrong password is not stale"
    );
    assert_eq!(net.engine.stats().registrations, 0);
    assert_eq!(net.engine.stats().auth_failures, 1);
    let failures = net.events_where(|e| matches!(e, EngineEvent::AuthFailed { .. }));
    assert_eq!(
        failures,
        vec![EngineEvent::AuthFailed {
            method: "REGISTER".into(),
            user: Some("101".into()),
            source: udp(CALLER_PORT),
            reason: AuthFailure::WrongPassword,
        }]
    );
}

#[test]
fn register_replayed_nonce_count_is_challenged_stale() {
    let mut net = Net::standard();
    let p = net.add_phone("101", "secret-101", CALLER_PORT);
    let req = net.phone(p).register(3600);
    let tx = net.send(p, req.clone());
    let challenge = net.phone(p).final_response(tx).unwrap();
    let good = net.phone(p).authorize(&req, &challenge);
    let tx = net.send(p, good.clone());
    assert_eq!(net.phone(p).statuses(tx), vec![200]);

    // The same credentials (same nonce, same nc) on a new transaction: a replay.
    let mut replay = good.clone();
    replay.headers.set(
        HeaderName::Via,
        format!(
            "SIP/2.0/UDP 127.0.0.1:{CALLER_PORT};branch={};rport",
            switchboard_sip::transaction::new_branch()
        ),
    );
    replay.headers.set(HeaderName::CSeq, "10 REGISTER");
    let tx = net.send(p, replay);
    let resp = net.phone(p).final_response(tx).unwrap();
    assert_eq!(resp.status, 401);
    let offer = parse_challenge(resp.headers.get(&HeaderName::WwwAuthenticate).unwrap());
    assert_eq!(offer.get("stale").map(String::as_str), Some("true"));
    assert!(net.events.iter().any(|e| matches!(
        e,
        EngineEvent::AuthFailed {
            reason: AuthFailure::Replay,
            ..
        }
    )));
}

#[test]
fn register_someone_elses_aor_is_forbidden() {
    let mut net = Net::standard();
    let p = net.add_phone("101", "secret-101", CALLER_PORT);
    let mut req = net.phone(p).register(3600);
    req.headers.set(HeaderName::To, "<sip:102@example.test>");
    let tx = net.send_authenticated(p, req);
    assert_eq!(net.phone(p).final_response(tx).unwrap().status, 403);
    assert_eq!(net.engine.stats().registrations, 0);

    // Registering by extension is one's own AOR.
    let mut by_ext = net.phone(p).register(3600);
    by_ext
        .headers
        .set(HeaderName::To, "<sip:1101@example.test>");
    let tx = net.send_authenticated(p, by_ext);
    assert_eq!(net.phone(p).final_response(tx).unwrap().status, 200);
}

#[test]
fn register_expires_zero_and_wildcard_remove() {
    let mut net = Net::standard();
    let a = net.add_phone("102", "secret-102", DEV1_PORT);
    let b = net.add_phone("102", "secret-102", DEV2_PORT);
    assert_eq!(net.register(a, 3600).status, 200);
    let ok = net.register(b, 3600);
    assert_eq!(contacts(&ok).len(), 2, "both contacts listed");
    assert_eq!(net.engine.stats().registrations, 2);

    // Expires: 0 removes that contact only.
    let ok = net.register(a, 0);
    assert_eq!(ok.status, 200);
    let left: Vec<String> = contacts(&ok).iter().map(|c| c.uri.to_string()).collect();
    assert_eq!(left, vec!["sip:102@127.0.0.1:5072"]);
    assert!(net
        .events
        .contains(&EngineEvent::Binding(BindingChange::Removed {
            aor: "102".into(),
            contact: "sip:102@127.0.0.1:5071".into(),
        })));

    // Contact: * with Expires: 0 removes the rest.
    assert_eq!(net.register(a, 3600).status, 200);
    assert_eq!(net.engine.stats().registrations, 2);
    let mut wildcard = net.phone(a).register(0);
    wildcard.headers.set(HeaderName::Contact, "*");
    let tx = net.send_authenticated(a, wildcard);
    let ok = net.phone(a).final_response(tx).unwrap();
    assert_eq!(ok.status, 200);
    assert!(contacts_raw(&ok).is_empty());
    assert_eq!(net.engine.stats().registrations, 0);
    let removed =
        net.events_where(|e| matches!(e, EngineEvent::Binding(BindingChange::Removed { .. })));
    assert_eq!(removed.len(), 3);

    // `*` with a non-zero Expires is invalid (§10.3 step 6).
    let mut bad = net.phone(a).register(60);
    bad.headers.set(HeaderName::Contact, "*");
    let tx = net.send_authenticated(a, bad);
    assert_eq!(net.phone(a).final_response(tx).unwrap().status, 400);
}

fn contacts_raw(resp: &Response) -> Vec<String> {
    resp.headers
        .get_all(&HeaderName::Contact)
        .map(str::to_string)
        .collect()
}

#[test]
fn register_too_brief_gets_423() {
    let mut net = Net::standard();
    let p = net.add_phone("101", "secret-101", CALLER_PORT);
    let resp = net.register(p, 30);
    assert_eq!(resp.status, 423);
    assert_eq!(resp.headers.get(&HeaderName::MinExpires), Some("60"));
    assert_eq!(net.engine.stats().registrations, 0);
}

#[test]
fn registration_expires_in_simulated_time() {
    let mut net = Net::standard();
    let p = net.add_phone("101", "secret-101", CALLER_PORT);
    assert_eq!(net.register(p, 60).status, 200);
    assert_eq!(net.engine.stats().registrations, 1);
    net.advance(secs(59));
    assert_eq!(net.engine.stats().registrations, 1, "not yet expired");
    assert!(net
        .events_where(|e| matches!(e, EngineEvent::Binding(BindingChange::Removed { .. })))
        .is_empty());
    net.advance(secs(2));
    assert_eq!(net.engine.stats().registrations, 0);
    assert_eq!(
        net.events_where(|e| matches!(e, EngineEvent::Binding(BindingChange::Removed { .. }))),
        vec![EngineEvent::Binding(BindingChange::Removed {
            aor: "101".into(),
            contact: "sip:101@127.0.0.1:5061".into(),
        })]
    );
    // And calls to it now find nobody.
    let q = net.add_phone("102", "secret-102", DEV1_PORT);
    let inv = net.phone(q).invite("101");
    let tx = net.send_authenticated(q, inv);
    assert_eq!(net.phone(q).final_response(tx).unwrap().status, 480);
}

// ---- 2. a whole call ------------------------------------------------------------------

#[test]
fn call_forks_to_two_devices_and_the_first_answer_wins() {
    let mut c = registered();
    c.net.phone(c.caller).ack_body = Some(SDP_OFFER.to_string());
    let tx = ring(&mut c);
    let (caller, dev1, dev2) = (c.caller, c.dev1, c.dev2);
    assert_eq!(c.net.phone(caller).statuses(tx), vec![100]);
    let (_, caller_invite) = c
        .net
        .phone(caller)
        .sent
        .get(&tx)
        .map(|r| ((), r.clone()))
        .unwrap();
    let caller_call_id = caller_invite.call_id().unwrap().to_string();

    let (_, inv1) = c.net.phone(dev1).last_request(Method::Invite);
    let (_, inv2) = c.net.phone(dev2).last_request(Method::Invite);
    for inv in [&inv1, &inv2] {
        assert_ne!(
            inv.call_id().unwrap(),
            caller_call_id,
            "a fresh Call-ID per leg"
        );
        assert_eq!(body(inv), SDP_OFFER, "SDP passed through untouched");
        assert_eq!(
            inv.headers.get(&HeaderName::ContentType),
            Some("application/sdp")
        );
        assert_eq!(inv.max_forwards().unwrap(), Some(69));
        assert!(inv.to().unwrap().tag().is_none());
        assert_eq!(inv.from().unwrap().uri.user.as_deref(), Some("101"));
        assert_eq!(inv.headers.get(&HeaderName::ProxyAuthorization), None);
    }
    assert_eq!(inv1.uri.to_string(), "sip:102@127.0.0.1:5071");
    assert_eq!(inv2.uri.to_string(), "sip:102@127.0.0.1:5072");
    assert_ne!(inv1.call_id().unwrap(), inv2.call_id().unwrap());

    // Device 1 rings: the caller sees 180 with a To tag.
    answer(&mut c, dev1, 180);
    let ringing = c.net.phone(caller).responses(tx);
    assert_eq!(ringing.last().unwrap().status, 180);
    let a_tag = to_tag(ringing.last().unwrap()).expect("180 carries a To tag");

    // Device 2 answers: the caller gets 200 (same tag), device 1 is cancelled.
    answer(&mut c, dev2, 200);
    let ok = c.net.phone(caller).final_response(tx).unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(to_tag(&ok).as_deref(), Some(a_tag.as_str()));
    assert_eq!(std::str::from_utf8(&ok.body).unwrap(), SDP_ANSWER);
    assert!(ok.headers.get(&HeaderName::Contact).is_some());
    assert_eq!(c.net.phone(dev1).count(Method::Cancel), 1);
    // Device 1 answered CANCEL with 200 and the INVITE with 487; the engine's
    // transaction layer ACKed the 487.
    assert!(c
        .net
        .phone(dev1)
        .seen
        .iter()
        .any(|s| matches!(s, Seen::AckAbsorbed)));

    // The caller's ACK is relayed as the ACK of device 2's 2xx, body included.
    let acks = c.net.phone(dev2).requests(Method::Ack);
    assert_eq!(acks.len(), 1, "{}", c.net.wire_log());
    let ack = &acks[0].1;
    assert_eq!(ack.call_id().unwrap(), inv2.call_id().unwrap());
    assert_eq!(ack.cseq().unwrap().seq, inv2.cseq().unwrap().seq);
    assert_eq!(body(ack), SDP_OFFER);
    assert_eq!(
        c.net.phone(dev1).count(Method::Ack),
        0,
        "only absorbed ACK for 487"
    );

    let stats = c.net.engine.stats();
    assert_eq!(stats.active_calls, 1);
    assert_eq!(stats.calls_total, 1);
    assert_eq!(stats.calls_answered, 1);

    // The caller hangs up.
    let bye = c.net.phone(caller).in_dialog(&caller_call_id, Method::Bye);
    assert_eq!(bye.to().unwrap().tag(), Some(a_tag.as_str()));
    let bye_tx = c.net.send(caller, bye);
    assert_eq!(c.net.phone(caller).statuses(bye_tx), vec![200]);
    let (_, dev_bye) = c.net.phone(dev2).last_request(Method::Bye);
    assert_eq!(dev_bye.call_id().unwrap(), inv2.call_id().unwrap());
    assert!(dev_bye.cseq().unwrap().seq > inv2.cseq().unwrap().seq);
    assert_eq!(c.net.phone(dev1).count(Method::Bye), 0);

    let calls: Vec<_> = c
        .net
        .events_where(|e| !matches!(e, EngineEvent::Binding(_)));
    let [EngineEvent::CallStarted {
        call,
        caller: who,
        callee,
        ..
    }, EngineEvent::CallAnswered { call: answered }, EngineEvent::CallEnded {
        call: ended,
        outcome,
        status,
        ..
    }] = calls.as_slice()
    else {
        panic!("unexpected events {calls:?}");
    };
    assert_eq!((who.as_str(), callee.as_str()), ("101", "102"));
    assert_eq!((answered, ended), (call, call));
    assert_eq!((*outcome, *status), (CallOutcome::Answered, 200));
    assert_eq!(c.net.engine.stats().active_calls, 0);
    assert!(c.net.run_to_quiet(secs(120)), "engine never went idle");
    assert!(c.net.undeliverable.is_empty());
}

// ---- 3. callee hangs up ---------------------------------------------------------------

#[test]
fn callee_hangs_up() {
    let (mut c, tx) = established();
    let (caller, dev2) = (c.caller, c.dev2);
    let b_id = b_call_id(&mut c, dev2);
    let bye = c.net.phone(dev2).in_dialog(&b_id, Method::Bye);
    let bye_tx = c.net.send(dev2, bye);
    assert_eq!(c.net.phone(dev2).statuses(bye_tx), vec![200]);
    let (_, got) = c.net.phone(caller).last_request(Method::Bye);
    let a_call_id = c.net.phone(caller).sent[&tx].call_id().unwrap().to_string();
    assert_eq!(got.call_id().unwrap(), a_call_id);
    // The BYE is in the caller's dialog: our tag in From, the caller's in To.
    let ok = c.net.phone(caller).final_response(tx).unwrap();
    assert_eq!(got.from().unwrap().tag(), to_tag(&ok).as_deref());
    let invite = c.net.phone(caller).sent[&tx].clone();
    assert_eq!(got.to().unwrap().tag(), invite.from().unwrap().tag());
    assert_eq!(got.uri.to_string(), "sip:101@127.0.0.1:5061");
    assert_eq!(c.net.engine.stats().active_calls, 0);
    assert_eq!(
        c.net
            .events_where(|e| matches!(e, EngineEvent::CallEnded { .. }))
            .len(),
        1
    );
    assert!(c.net.run_to_quiet(secs(120)));
}

// ---- 4. busy --------------------------------------------------------------------------

#[test]
fn busy_device_gives_486() {
    let mut net = Net::standard();
    let caller = net.add_phone("101", "secret-101", CALLER_PORT);
    let dev = net.add_phone("102", "secret-102", DEV1_PORT);
    assert_eq!(net.register(caller, 3600).status, 200);
    assert_eq!(net.register(dev, 3600).status, 200);
    let inv = net.phone(caller).invite("102");
    let tx = net.send_authenticated(caller, inv);
    let (id, _) = net.phone(dev).last_request(Method::Invite);
    net.respond(dev, id.unwrap(), 486, None);
    let resp = net
        .phone(caller)
        .final_response(tx)
        .expect("a final answer");
    assert_eq!(resp.status, 486);
    // The engine's INVITE client transaction ACKed the device's 486, and the caller's
    // ACK for our 486 was absorbed by the engine's server transaction (never relayed).
    assert!(net
        .phone(dev)
        .seen
        .iter()
        .any(|s| matches!(s, Seen::AckAbsorbed)));
    assert_eq!(net.phone(dev).count(Method::Ack), 0);
    assert_eq!(
        net.events_where(|e| matches!(e, EngineEvent::CallEnded { .. })),
        vec![EngineEvent::CallEnded {
            call: 1,
            caller: "101".into(),
            callee: "102".into(),
            outcome: CallOutcome::Busy,
            status: 486,
        }]
    );
    assert_eq!(net.engine.stats().active_calls, 0);
    assert!(net.run_to_quiet(secs(120)));
}

// ---- 5. no answer ---------------------------------------------------------------------

#[test]
fn no_answer_times_out_with_408_and_cancels_devices() {
    let mut c = registered();
    let tx = ring(&mut c);
    let (caller, dev1, dev2) = (c.caller, c.dev1, c.dev2);
    answer(&mut c, dev1, 180);
    answer(&mut c, dev2, 180);
    c.net.advance(secs(29));
    assert!(
        c.net.phone(caller).final_response(tx).is_none(),
        "still ringing at 29 s"
    );
    assert_eq!(c.net.phone(dev1).count(Method::Cancel), 0);
    c.net.advance(secs(2));
    assert_eq!(c.net.phone(caller).final_response(tx).unwrap().status, 408);
    assert_eq!(c.net.phone(dev1).count(Method::Cancel), 1);
    assert_eq!(c.net.phone(dev2).count(Method::Cancel), 1);
    let ended = c
        .net
        .events_where(|e| matches!(e, EngineEvent::CallEnded { .. }));
    assert!(matches!(
        ended.as_slice(),
        [EngineEvent::CallEnded {
            outcome: CallOutcome::NoAnswer,
            status: 408,
            ..
        }]
    ));
    assert!(c.net.run_to_quiet(secs(120)));
    assert_eq!(c.net.engine.stats().active_calls, 0);
}

// ---- 6. caller cancels ----------------------------------------------------------------

#[test]
fn caller_cancel_while_ringing() {
    let mut c = registered();
    let tx = ring(&mut c);
    let (caller, dev1, dev2) = (c.caller, c.dev1, c.dev2);
    answer(&mut c, dev1, 180);
    let cancel = c.net.cancel(caller, tx);
    assert_eq!(c.net.phone(caller).statuses(cancel), vec![200]);
    assert_eq!(c.net.phone(caller).final_response(tx).unwrap().status, 487);
    assert_eq!(c.net.phone(dev1).count(Method::Cancel), 1);
    // Device 2 has sent no provisional response yet, so its CANCEL waits for one
    // (RFC 3261 §9.1); its transaction sends 100 Trying after 200 ms.
    assert_eq!(c.net.phone(dev2).count(Method::Cancel), 0);
    assert!(c
        .net
        .run_until(|n| n.phones[dev2].count(Method::Cancel) == 1, secs(1)));
    assert_eq!(c.net.phone(dev2).count(Method::Ack), 0);
    let ended = c
        .net
        .events_where(|e| matches!(e, EngineEvent::CallEnded { .. }));
    assert!(matches!(
        ended.as_slice(),
        [EngineEvent::CallEnded {
            outcome: CallOutcome::Cancelled,
            status: 487,
            ..
        }]
    ));
    assert!(c.net.run_to_quiet(secs(120)));
}

// ---- 7. CANCEL / 200 race -------------------------------------------------------------

#[test]
fn cancel_crossing_a_200_lets_the_call_proceed() {
    let mut c = registered();
    let tx = ring(&mut c);
    let (caller, dev1, dev2) = (c.caller, c.dev1, c.dev2);
    answer(&mut c, dev1, 180);
    // Device 2's 200 and the caller's CANCEL cross: the 200 reaches the engine first.
    c.net.hold = true;
    answer(&mut c, dev2, 200);
    let cancel = c.net.cancel(caller, tx);
    c.net.release();
    // RFC 3261 §9.2: once the INVITE has its final response the CANCEL has no effect,
    // and a CANCEL that matched the (still existing) INVITE transaction gets 200.
    assert_eq!(c.net.phone(caller).final_response(tx).unwrap().status, 200);
    assert_eq!(
        c.net.phone(caller).statuses(cancel),
        vec![200],
        "{}",
        c.net.wire_log()
    );
    assert!(!c.net.phone(caller).statuses(tx).contains(&487));
    assert_eq!(c.net.phone(dev2).count(Method::Ack), 1);
    assert_eq!(c.net.phone(dev2).count(Method::Cancel), 0);
    assert_eq!(c.net.phone(dev1).count(Method::Cancel), 1);
    assert_eq!(c.net.engine.stats().active_calls, 1);
    assert!(c
        .net
        .events_where(|e| matches!(e, EngineEvent::CallEnded { .. }))
        .is_empty());
}

#[test]
fn cancel_arriving_before_the_200_ends_the_call_and_hangs_up_the_device() {
    let mut c = registered();
    let tx = ring(&mut c);
    let (caller, dev2) = (c.caller, c.dev2);
    // The other order: the CANCEL reaches the engine before device 2's 200.
    c.net.hold = true;
    let cancel = c.net.cancel(caller, tx);
    answer(&mut c, dev2, 200);
    c.net.release();
    assert_eq!(c.net.phone(caller).statuses(cancel), vec![200]);
    assert_eq!(c.net.phone(caller).final_response(tx).unwrap().status, 487);
    // The late 2xx is ACKed (§13.2.2.4) and the device hung up with BYE.
    assert_eq!(c.net.phone(dev2).count(Method::Ack), 1);
    assert_eq!(c.net.phone(dev2).count(Method::Bye), 1);
    assert_eq!(c.net.engine.stats().active_calls, 0);
    assert!(c.net.run_to_quiet(secs(120)));
}

// ---- 8. refusals ----------------------------------------------------------------------

#[test]
fn refusals_and_stateless_answers() {
    let mut net = Net::standard();
    let p = net.add_phone("101", "secret-101", CALLER_PORT);
    assert_eq!(net.register(p, 3600).status, 200);

    let status_of = |net: &mut Net, req: Request| {
        let tx = net.send_authenticated(p, req);
        net.phone(p).final_response(tx).expect("a final answer")
    };

    let unknown = net.phone(p).invite("999");
    assert_eq!(status_of(&mut net, unknown).status, 404);
    let unregistered = net.phone(p).invite("103");
    assert_eq!(status_of(&mut net, unregistered).status, 480);

    let mut bye = net.phone(p).request(
        Method::Bye,
        "sip:102@example.test",
        "<sip:102@example.test>;tag=nosuchtag",
    );
    bye.headers.set(HeaderName::CSeq, "7 BYE");
    assert_eq!(status_of(&mut net, bye).status, 481);

    let foo = net.phone(p).request(
        Method::Other("FOO".into()),
        "sip:example.test",
        "<sip:example.test>",
    );
    let resp = status_of(&mut net, foo);
    assert_eq!(resp.status, 501);
    assert!(resp.headers.get(&HeaderName::Allow).is_some());

    let sub = net.phone(p).request(
        Method::Subscribe,
        "sip:102@example.test",
        "<sip:102@example.test>",
    );
    let resp = status_of(&mut net, sub);
    assert_eq!(resp.status, 405);
    assert!(resp
        .headers
        .get(&HeaderName::Allow)
        .unwrap()
        .contains("INVITE"));

    let options = net
        .phone(p)
        .request(Method::Options, "sip:example.test", "<sip:example.test>");
    let resp = status_of(&mut net, options);
    assert_eq!(resp.status, 200);
    assert!(resp.headers.get(&HeaderName::Allow).is_some());

    let mut hops = net.phone(p).invite("102");
    hops.headers.set(HeaderName::MaxForwards, "0");
    assert_eq!(status_of(&mut net, hops).status, 483);

    // A request without Call-ID is answered 400 statelessly.
    let no_call_id = format!(
        "OPTIONS sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{CALLER_PORT};branch=z9hG4bKnocallid\r\nMax-Forwards: 70\r\nFrom: <sip:101@example.test>;tag=a\r\nTo: <sip:example.test>\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    let before = net.phone(p).seen.len();
    net.send_raw(p, no_call_id.as_bytes());
    let answered: Vec<u16> = net.phone(p).seen[before..]
        .iter()
        .filter_map(|s| match s {
            Seen::Stray(r) => Some(r.status),
            _ => None,
        })
        .collect();
    assert_eq!(answered, vec![400], "{}", net.wire_log());

    // Garbage is counted.
    let errors = net.engine.stats().parse_errors;
    net.send_raw(p, b"\x00\x01 this is not SIP\r\n\r\n");
    assert_eq!(net.engine.stats().parse_errors, errors + 1);
    assert!(net
        .events
        .iter()
        .any(|e| matches!(e, EngineEvent::Malformed { .. })));
    assert_eq!(net.engine.stats().active_calls, 0);
    // Only the call to the unregistered user was routed (and logged, 480); the refusals
    // before routing are not calls.
    assert_eq!(net.engine.stats().calls_total, 1);
}

// ---- 9. mid-call requests -------------------------------------------------------------

#[test]
fn reinvite_and_update_are_relayed() {
    let (mut c, tx) = established();
    let (caller, dev2) = (c.caller, c.dev2);
    let a_id = c.net.phone(caller).sent[&tx].call_id().unwrap().to_string();
    let b_id = b_call_id(&mut c, dev2);
    let (_, b_invite) = c.net.phone(dev2).last_request(Method::Invite);
    let b_cseq = b_invite.cseq().unwrap().seq;

    let mut reinvite = c.net.phone(caller).in_dialog(&a_id, Method::Invite);
    reinvite.set_body(b"v=0\r\ns=hold\r\n".to_vec(), Some("application/sdp"));
    let re_tx = c.net.send(caller, reinvite);
    let invites = c.net.phone(dev2).requests(Method::Invite);
    assert_eq!(invites.len(), 2, "{}", c.net.wire_log());
    let (re_id, relayed) = invites[1].clone();
    assert_eq!(relayed.call_id().unwrap(), b_id);
    assert_eq!(
        relayed.cseq().unwrap().seq,
        b_cseq + 1,
        "the B leg's own CSeq"
    );
    assert_eq!(body(&relayed), "v=0\r\ns=hold\r\n");
    assert!(relayed.to().unwrap().tag().is_some());
    c.net
        .respond(dev2, re_id.unwrap(), 200, Some("v=0\r\ns=held\r\n"));
    let ok = c.net.phone(caller).final_response(re_tx).unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(std::str::from_utf8(&ok.body).unwrap(), "v=0\r\ns=held\r\n");
    // The caller's ACK became the ACK of the B leg's re-INVITE.
    let acks = c.net.phone(dev2).requests(Method::Ack);
    assert_eq!(acks.len(), 2, "{}", c.net.wire_log());
    assert_eq!(acks[1].1.cseq().unwrap().seq, b_cseq + 1);
    assert_eq!(acks[1].1.call_id().unwrap(), b_id);

    let update = c.net.phone(caller).in_dialog(&a_id, Method::Update);
    let up_tx = c.net.send(caller, update);
    let (up_id, relayed) = c.net.phone(dev2).last_request(Method::Update);
    assert_eq!(relayed.cseq().unwrap().seq, b_cseq + 2);
    assert_eq!(relayed.call_id().unwrap(), b_id);
    c.net.respond(dev2, up_id.unwrap(), 200, None);
    assert_eq!(c.net.phone(caller).statuses(up_tx), vec![200]);

    // And the other way: the callee re-INVITEs the caller.
    let re_b = c.net.phone(dev2).in_dialog(&b_id, Method::Invite);
    let re_b_tx = c.net.send(dev2, re_b);
    let (id, to_caller) = c.net.phone(caller).last_request(Method::Invite);
    assert_eq!(to_caller.call_id().unwrap(), a_id);
    c.net.respond(caller, id.unwrap(), 200, Some(SDP_OFFER));
    assert_eq!(
        c.net.phone(dev2).final_response(re_b_tx).unwrap().status,
        200
    );
    assert_eq!(c.net.phone(caller).count(Method::Ack), 1);
    assert_eq!(c.net.engine.stats().active_calls, 1);
}

// ---- 10. loss ---------------------------------------------------------------------------

#[test]
fn whole_call_survives_twenty_percent_loss() {
    for seed in 1..=64 {
        let mut net = Net::standard();
        net.set_loss(0.2, seed);
        let caller = net.add_phone("101", "secret-101", CALLER_PORT);
        let dev1 = net.add_phone("102", "secret-102", DEV1_PORT);
        let dev2 = net.add_phone("102", "secret-102", DEV2_PORT);
        for p in [caller, dev1, dev2] {
            assert_eq!(net.register(p, 3600).status, 200, "seed {seed}");
        }
        let inv = net.phone(caller).invite("102");
        let tx = net.send_authenticated(caller, inv);
        assert!(
            net.run_until(
                |n| n.phones[dev1].count(Method::Invite) >= 1
                    && n.phones[dev2].count(Method::Invite) >= 1,
                secs(40)
            ),
            "seed {seed}: INVITE never reached both devices\n{}",
            net.wire_log()
        );
        let (id1, _) = net.phone(dev1).last_request(Method::Invite);
        net.respond(dev1, id1.unwrap(), 180, None);
        let (id2, _) = net.phone(dev2).last_request(Method::Invite);
        net.respond(dev2, id2.unwrap(), 200, Some(SDP_ANSWER));
        assert!(
            net.run_until(
                |n| n.phones[caller].final_response(tx).is_some()
                    && n.phones[dev2].count(Method::Ack) >= 1,
                secs(40)
            ),
            "seed {seed}: the answer did not get through\n{}",
            net.wire_log()
        );
        assert_eq!(net.phone(caller).final_response(tx).unwrap().status, 200);
        // Device 1 is cancelled, unless none of its provisional responses ever reached
        // the engine: a CANCEL must wait for one (RFC 3261 §9.1) and Timer B ends the
        // branch instead.
        let dev1_provisional = |n: &Net| {
            n.delivered.iter().any(|d| {
                d.from == udp(DEV1_PORT)
                    && matches!(d.message(), Some(Message::Response(r)) if r.is_provisional())
            })
        };
        net.run_until(|n| n.phones[dev1].count(Method::Cancel) >= 1, secs(40));
        assert_eq!(
            net.phone(dev1).count(Method::Cancel) >= 1,
            dev1_provisional(&net),
            "seed {seed}: device 1 was not cancelled\n{}",
            net.wire_log()
        );
        let a_id = net.phone(caller).sent[&tx].call_id().unwrap().to_string();
        let bye = net.phone(caller).in_dialog(&a_id, Method::Bye);
        let bye_tx = net.send(caller, bye);
        assert!(
            net.run_until(
                |n| n.phones[caller].final_response(bye_tx).is_some()
                    && n.phones[dev2].count(Method::Bye) >= 1,
                secs(40)
            ),
            "seed {seed}: BYE did not get through"
        );
        assert_eq!(
            net.phone(caller).final_response(bye_tx).unwrap().status,
            200
        );
        assert!(net.run_to_quiet(secs(300)), "seed {seed}: never idle");
        assert_eq!(net.engine.stats().active_calls, 0);
        let ended = net.events_where(|e| matches!(e, EngineEvent::CallEnded { .. }));
        assert!(
            matches!(
                ended.as_slice(),
                [EngineEvent::CallEnded {
                    outcome: CallOutcome::Answered,
                    ..
                }]
            ),
            "seed {seed}: {ended:?}"
        );
        // No phone gave up on a transaction or on an ACK.
        for p in [caller, dev1, dev2] {
            assert!(
                !net.phone(p)
                    .seen
                    .iter()
                    .any(|s| matches!(s, Seen::Timeout(_) | Seen::AckTimeout(_))),
                "seed {seed}: phone {p} timed out"
            );
        }
        assert!(!net.dropped.is_empty(), "seed {seed}: loss did happen");
    }
}

// ---- 11. shutdown -----------------------------------------------------------------------

#[test]
fn graceful_shutdown_hangs_up_and_refuses_new_calls() {
    let (mut c, _tx) = established();
    let (caller, dev2) = (c.caller, c.dev2);
    c.net.shutdown();
    assert_eq!(c.net.phone(caller).count(Method::Bye), 1);
    assert_eq!(c.net.phone(dev2).count(Method::Bye), 1);
    assert_eq!(c.net.engine.stats().active_calls, 0);
    assert!(
        !c.net.engine.is_idle(),
        "the BYE transactions are still running"
    );
    assert!(
        c.net.run_until(|n| n.engine.is_idle(), secs(120)),
        "the engine never became idle after shutdown"
    );
    let inv = c.net.phone(caller).invite("102");
    let tx = c.net.send(caller, inv);
    assert_eq!(c.net.phone(caller).final_response(tx).unwrap().status, 503);
}

// ---- 12. lost ACK -----------------------------------------------------------------------

#[test]
fn retransmitted_2xx_after_a_lost_ack_is_acked_again() {
    let mut c = registered();
    let tx = ring(&mut c);
    let (caller, dev2) = (c.caller, c.dev2);
    // Lose the engine's first ACK to device 2.
    let mut dropped = 0;
    c.net.drop_when(move |d| {
        let is_ack = d.to == udp(DEV2_PORT) && d.data.starts_with(b"ACK ");
        if is_ack && dropped == 0 {
            dropped += 1;
            return true;
        }
        false
    });
    answer(&mut c, dev2, 200);
    assert_eq!(c.net.phone(caller).final_response(tx).unwrap().status, 200);
    assert_eq!(
        c.net.phone(dev2).count(Method::Ack),
        0,
        "the first ACK was lost"
    );
    // Device 2 retransmits its 200 after T1; the engine must ACK it again.
    c.net.advance(secs(1));
    let acks = c.net.phone(dev2).requests(Method::Ack);
    assert_eq!(acks.len(), 1, "{}", c.net.wire_log());
    assert_eq!(c.net.dropped.len(), 1);
    // The ACK re-sent is the one that was lost, byte for byte (same branch: §17.1.1.3).
    let resent: Vec<_> = c
        .net
        .delivered
        .iter()
        .filter(|d| d.to == udp(DEV2_PORT) && d.data.starts_with(b"ACK "))
        .collect();
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].data, c.net.dropped[0].data);
    // The caller saw exactly one 200 (the retransmission was not relayed twice).
    let oks = c.net.phone(caller).statuses(tx);
    assert_eq!(oks.iter().filter(|s| **s == 200).count(), 1, "{oks:?}");
    c.net.advance(secs(40));
    assert!(!c
        .net
        .phone(dev2)
        .seen
        .iter()
        .any(|s| matches!(s, Seen::AckTimeout(_))));
    assert_eq!(c.net.engine.stats().active_calls, 1);
}

// ---- 13. the caller never ACKs ------------------------------------------------------------

#[test]
fn unacknowledged_200_hangs_up_both_legs() {
    let mut c = registered();
    c.net.phone(c.caller).auto_ack = false;
    let tx = ring(&mut c);
    let (caller, dev2) = (c.caller, c.dev2);
    answer(&mut c, dev2, 200);
    assert_eq!(c.net.phone(caller).final_response(tx).unwrap().status, 200);
    let t0 = c.net.now;
    assert!(c.net.run_until(
        |n| n.phones[caller].count(Method::Bye) == 1 && n.phones[dev2].count(Method::Bye) == 1,
        secs(60)
    ));
    let waited = c.net.now - t0;
    assert!(
        waited >= secs(32) && waited < secs(33),
        "BYE after 64*T1, not {waited:?}"
    );
    // The caller kept getting the 200 in the meantime.
    assert!(c.net.phone(caller).statuses(tx).len() > 3);
    // The callee's 2xx is ACKed before its dialog is ended (RFC 3261 §13.2.2.4, §15).
    assert_eq!(
        c.net.phone(dev2).count(Method::Ack),
        1,
        "{}",
        c.net.wire_log()
    );
    let ended = c
        .net
        .events_where(|e| matches!(e, EngineEvent::CallEnded { .. }));
    assert_eq!(ended.len(), 1);
    assert_eq!(c.net.engine.stats().active_calls, 0);
    assert!(c.net.run_to_quiet(secs(120)));
}

#[test]
fn shutdown_while_ringing_answers_503_and_cancels() {
    let mut c = registered();
    let tx = ring(&mut c);
    let (caller, dev1, dev2) = (c.caller, c.dev1, c.dev2);
    answer(&mut c, dev1, 180);
    answer(&mut c, dev2, 180);
    c.net.shutdown();
    assert_eq!(c.net.phone(caller).final_response(tx).unwrap().status, 503);
    assert_eq!(c.net.phone(dev1).count(Method::Cancel), 1);
    assert_eq!(c.net.phone(dev2).count(Method::Cancel), 1);
    assert!(c.net.run_until(|n| n.engine.is_idle(), secs(120)));
    assert_eq!(c.net.engine.stats().active_calls, 0);
}

#[test]
fn shutdown_before_the_callers_ack_acks_the_callee_then_hangs_up() {
    let mut c = registered();
    c.net.phone(c.caller).auto_ack = false;
    let tx = ring(&mut c);
    let (caller, dev2) = (c.caller, c.dev2);
    answer(&mut c, dev2, 200);
    assert_eq!(c.net.phone(caller).final_response(tx).unwrap().status, 200);
    c.net.shutdown();
    assert_eq!(c.net.phone(caller).count(Method::Bye), 1);
    assert_eq!(c.net.phone(dev2).count(Method::Bye), 1);
    assert_eq!(c.net.phone(dev2).count(Method::Ack), 1);
    // The ACK reached device 2 before the BYE.
    let order: Vec<Method> = c
        .net
        .phone(dev2)
        .seen
        .iter()
        .filter_map(|s| match s {
            Seen::Request { req, .. } => Some(req.method.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(order, vec![Method::Invite, Method::Ack, Method::Bye]);
    assert!(c.net.run_until(|n| n.engine.is_idle(), secs(120)));
}

// ---- DTMF by SIP INFO ----------------------------------------------------------------------

#[test]
fn info_dtmf_is_reported_and_relayed() {
    let (mut c, _tx) = established();
    let (caller, dev2) = (c.caller, c.dev2);
    let a_id = c.net.phone(caller).sent[&_tx]
        .call_id()
        .unwrap()
        .to_string();
    let mut info = c.net.phone(caller).in_dialog(&a_id, Method::Info);
    info.set_body(
        b"Signal=5\r\nDuration=160\r\n".to_vec(),
        Some("application/dtmf-relay"),
    );
    let info_tx = c.net.send(caller, info);
    let (id, relayed) = c.net.phone(dev2).last_request(Method::Info);
    assert_eq!(body(&relayed), "Signal=5\r\nDuration=160\r\n");
    c.net.respond(dev2, id.unwrap(), 200, None);
    assert_eq!(c.net.phone(caller).statuses(info_tx), vec![200]);
    let digits = c
        .net
        .events_where(|e| matches!(e, EngineEvent::Dtmf { .. }));
    assert_eq!(
        digits,
        vec![EngineEvent::Dtmf {
            call: 1,
            caller: true,
            digit: '5',
            duration_ms: 160,
            source: "info",
        }]
    );
}

/// The caller's ACK is lost but it hangs up: its BYE proves it got the 200, so the 200
/// stops being retransmitted at once (not for 64*T1 after the call ended).
#[test]
fn a_bye_from_the_caller_stops_the_200_retransmissions() {
    let mut c = registered();
    // Every ACK toward the engine is lost on the wire (the callee's leg is ACKed by the
    // engine itself, so only the caller's ACKs match).
    c.net
        .drop_when(|d| d.data.starts_with(b"ACK ") && d.to.addr.port() == ENGINE_PORT);
    let tx = ring(&mut c);
    let (caller, dev2) = (c.caller, c.dev2);
    answer(&mut c, dev2, 200);
    assert_eq!(c.net.phone(caller).final_response(tx).unwrap().status, 200);
    let a_id = c.net.phone(caller).sent[&tx].call_id().unwrap().to_string();
    let bye = c.net.phone(caller).in_dialog(&a_id, Method::Bye);
    let bye_tx = c.net.send(caller, bye);
    assert_eq!(c.net.phone(caller).statuses(bye_tx), vec![200]);
    let after_bye = c.net.phone(caller).statuses(tx).len();
    c.net.advance(secs(40));
    assert_eq!(
        c.net.phone(caller).statuses(tx).len(),
        after_bye,
        "the 200 was retransmitted after the BYE: {}",
        c.net.wire_log()
    );
    assert_eq!(c.net.phone(dev2).count(Method::Bye), 1);
    assert_eq!(c.net.engine.stats().active_calls, 0);
}
