//! SIP trunks in simulated time: registration with a provider (digest, refresh, failover
//! to the next registrar), outbound calls with the provider's credentials, inbound calls
//! by DID, and the toll-fraud rules (no route, no trunk; never trunk to trunk).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use switchboard_core::{EngineEvent, RouteDecision, RouteQuery, Router, TrunkConfig, TrunkStatus};
use switchboard_sip::digest::{self, Algorithm, Credentials};
use switchboard_sip::transaction::Transport;
use switchboard_sip::{HeaderName, Method, Request};

use support::{config, secs, user, Net, PhoneId, SDP_ANSWER};

const PROVIDER: u16 = 5090;
const PROVIDER2: u16 = 5091;
const REALM: &str = "voip.example.net";

fn trunk(gateways: &[u16]) -> TrunkConfig {
    TrunkConfig {
        name: "provider".into(),
        domain: "voip.example.net".into(),
        gateways: gateways
            .iter()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
            .collect(),
        transport: Transport::Udp,
        username: "acct42".into(),
        auth_username: None,
        password: Some("trunk-secret".into()),
        register: true,
        expires: 120,
        caller_id: Some("+390551234567".into()),
        inbound: true,
        match_ip_only: false,
    }
}

/// Numbers starting with 00 go out through the provider; anything else is a user.
#[derive(Debug)]
struct TestPlan;

impl Router for TestPlan {
    fn route(&self, q: &RouteQuery<'_>) -> RouteDecision {
        if q.dialled.starts_with("00") {
            RouteDecision::Trunk {
                trunk: "provider".into(),
                number: q.dialled.to_string(),
                caller_id: None,
            }
        } else if q.dialled == "1102" || q.dialled == "102" {
            RouteDecision::User("102".into())
        } else {
            RouteDecision::NotFound
        }
    }
}

fn net(gateways: &[u16]) -> (Net, Vec<PhoneId>) {
    let mut cfg = config(vec![Algorithm::Md5]);
    cfg.trunks = vec![trunk(gateways)];
    let mut net = Net::new(
        cfg,
        vec![
            user("101", Some("1101"), "secret-101"),
            user("102", Some("1102"), "secret-102"),
        ],
    );
    let providers = gateways
        .iter()
        .map(|p| net.add_phone("provider", "unused", *p))
        .collect();
    (net, providers)
}

fn challenge(nonce: &str) -> (HeaderName, String) {
    (
        HeaderName::WwwAuthenticate,
        digest::challenge(REALM, nonce, Algorithm::Md5, false, None),
    )
}

fn check_credentials(req: &Request, header: &HeaderName) {
    let creds = Credentials::parse(req.headers.get(header).expect("credentials")).unwrap();
    assert_eq!(creds.username, "acct42");
    let ha1 = digest::ha1(Algorithm::Md5, "acct42", REALM, "trunk-secret");
    assert!(digest::verify(&creds, req.method.as_str(), &ha1), "{req:?}");
}

/// Answers the provider's pending REGISTER: challenge, then 200 with `expires`.
fn accept_registration(net: &mut Net, provider: PhoneId, expires: u32) {
    // The first REGISTER goes out on the engine's first timer.
    net.advance(Duration::from_millis(1));
    let (id, reg) = net.phone(provider).last_request(Method::Register);
    assert!(reg.headers.get(&HeaderName::Authorization).is_none());
    net.respond_with(provider, id.unwrap(), 401, &[challenge("n1")], None);
    let (id, reg) = net.phone(provider).last_request(Method::Register);
    check_credentials(&reg, &HeaderName::Authorization);
    let contact = reg.headers.get(&HeaderName::Contact).unwrap().to_string();
    net.respond_with(
        provider,
        id.unwrap(),
        200,
        &[(HeaderName::Contact, format!("{contact};expires={expires}"))],
        None,
    );
}

#[test]
fn a_trunk_registers_with_digest_and_refreshes_before_expiry() {
    let (mut net, providers) = net(&[PROVIDER]);
    let p = providers[0];
    net.advance(Duration::from_millis(1));
    let (_, reg) = net.phone(p).last_request(Method::Register);
    assert_eq!(reg.uri.to_string(), "sip:voip.example.net");
    assert!(reg
        .headers
        .get(&HeaderName::To)
        .unwrap()
        .contains("acct42@voip.example.net"));
    assert_eq!(reg.headers.get(&HeaderName::Expires), Some("120"));
    accept_registration(&mut net, p, 100);
    assert!(net.events.iter().any(|e| matches!(
        e,
        EngineEvent::Trunk {
            status: TrunkStatus::Registered { expires: 100, .. },
            ..
        }
    )));
    assert_eq!(
        net.engine.trunk_registered(),
        vec![("provider".into(), true)]
    );
    // Refreshed at half the granted lifetime, in the same Call-ID with a higher CSeq.
    let before = net.phone(p).count(Method::Register);
    net.advance(secs(49));
    assert_eq!(net.phone(p).count(Method::Register), before);
    net.advance(secs(2));
    assert_eq!(net.phone(p).count(Method::Register), before + 1);
    let (_, refresh) = net.phone(p).last_request(Method::Register);
    assert_eq!(refresh.call_id().unwrap(), reg.call_id().unwrap());
    assert!(refresh.cseq().unwrap().seq > reg.cseq().unwrap().seq);
}

#[test]
fn a_wrong_password_stops_after_two_challenges_and_a_dead_registrar_fails_over() {
    let (mut net, providers) = net(&[PROVIDER, PROVIDER2]);
    let (p1, p2) = (providers[0], providers[1]);
    // The first registrar never answers: after Timer F the second one is asked.
    net.drop_when(|d| d.to.addr.port() == PROVIDER);
    net.advance(secs(33));
    assert_eq!(
        net.phone(p2).count(Method::Register),
        1,
        "{}",
        net.wire_log()
    );
    assert_eq!(net.phone(p1).count(Method::Register), 0);
    // The second one keeps refusing our credentials: we give up for 30 s, not loop.
    for n in 0..3 {
        let (id, _) = net.phone(p2).last_request(Method::Register);
        net.respond_with(p2, id.unwrap(), 401, &[challenge(&format!("n{n}"))], None);
    }
    assert_eq!(net.phone(p2).count(Method::Register), 3);
    assert!(net.events.iter().any(|e| matches!(
        e,
        EngineEvent::Trunk {
            status: TrunkStatus::Failed { .. },
            ..
        }
    )));
    assert_eq!(
        net.engine.trunk_registered(),
        vec![("provider".into(), false)]
    );
}

#[test]
fn outbound_calls_use_the_providers_credentials_and_inbound_dids_reach_users() {
    let (mut net, providers) = net(&[PROVIDER]);
    let provider = providers[0];
    net.engine.set_router(Box::new(TestPlan));
    let alice = net.add_phone("101", "secret-101", 5061);
    let bob = net.add_phone("102", "secret-102", 5071);
    for ph in [alice, bob] {
        assert_eq!(net.register(ph, 3600).status, 200);
    }
    accept_registration(&mut net, provider, 3600);

    // 101 dials an international number: out through the trunk.
    let invite = net.phone(alice).invite("0039055999888");
    let tx = net.send_authenticated(alice, invite);
    let (id, out) = net.phone(provider).last_request(Method::Invite);
    assert_eq!(out.uri.to_string(), "sip:0039055999888@voip.example.net");
    assert!(out
        .from()
        .unwrap()
        .uri
        .to_string()
        .starts_with("sip:+390551234567@voip.example.net"));
    net.respond_with(
        provider,
        id.unwrap(),
        407,
        &[(
            HeaderName::ProxyAuthenticate,
            digest::challenge(REALM, "inv1", Algorithm::Md5, false, None),
        )],
        None,
    );
    let invites = net.phone(provider).requests(Method::Invite);
    assert_eq!(invites.len(), 2, "{}", net.wire_log());
    let (id, retry) = invites[1].clone();
    check_credentials(&retry, &HeaderName::ProxyAuthorization);
    assert_eq!(retry.call_id().unwrap(), out.call_id().unwrap());
    assert_eq!(retry.body, out.body, "the same offer");
    net.respond(provider, id.unwrap(), 200, Some(SDP_ANSWER));
    assert_eq!(net.phone(alice).final_response(tx).unwrap().status, 200);
    assert_eq!(net.phone(provider).count(Method::Ack), 1);

    // The provider calls our DID 1102 (to our registered contact, the DID in To).
    let mut inbound = net.phone(provider).request(
        Method::Invite,
        "sip:acct42@127.0.0.1:5060",
        "<sip:1102@voip.example.net>",
    );
    inbound.set_body(
        support::SDP_OFFER.as_bytes().to_vec(),
        Some("application/sdp"),
    );
    let in_tx = net.send(provider, inbound);
    let (id, rung) = net.phone(bob).last_request(Method::Invite);
    assert!(rung.from().unwrap().uri.to_string().contains("provider@"));
    net.respond(bob, id.unwrap(), 200, Some(SDP_ANSWER));
    assert_eq!(
        net.phone(provider).final_response(in_tx).unwrap().status,
        200
    );

    // Providers often send calls from another port than their registrar's: a call to our
    // registered account from the gateway's IP is the trunk's; to anything else, it is a
    // stranger that must authenticate.
    let other_port = net.add_phone("provider", "unused", 5095);
    let mut by_registration = net.phone(other_port).request(
        Method::Invite,
        "sip:acct42@127.0.0.1:5060",
        "<sip:1102@voip.example.net>",
    );
    by_registration.set_body(
        support::SDP_OFFER.as_bytes().to_vec(),
        Some("application/sdp"),
    );
    let before = net.phone(bob).count(Method::Invite);
    net.send(other_port, by_registration);
    assert_eq!(net.phone(bob).count(Method::Invite), before + 1);
    let mut stranger = net.phone(other_port).request(
        Method::Invite,
        "sip:1102@127.0.0.1:5060",
        "<sip:1102@voip.example.net>",
    );
    stranger.set_body(
        support::SDP_OFFER.as_bytes().to_vec(),
        Some("application/sdp"),
    );
    let st = net.send(other_port, stranger);
    assert_eq!(
        net.phone(other_port).final_response(st).unwrap().status,
        407
    );

    // A call from the trunk is never routed back out to the trunk.
    let mut hairpin = net.phone(provider).request(
        Method::Invite,
        "sip:0044207000@127.0.0.1:5060",
        "<sip:0044207000@x>",
    );
    hairpin.set_body(
        support::SDP_OFFER.as_bytes().to_vec(),
        Some("application/sdp"),
    );
    let hp = net.send(provider, hairpin);
    assert_eq!(net.phone(provider).final_response(hp).unwrap().status, 403);
}

#[test]
fn without_a_route_nobody_reaches_the_trunk_and_strangers_are_challenged() {
    let (mut net, providers) = net(&[PROVIDER]);
    let provider = providers[0];
    accept_registration(&mut net, provider, 3600);
    let alice = net.add_phone("101", "secret-101", 5061);
    assert_eq!(net.register(alice, 3600).status, 200);
    // No router installed: only users are reachable, numbers are 404.
    let invite = net.phone(alice).invite("0039055999888");
    let tx = net.send_authenticated(alice, invite);
    assert_eq!(net.phone(alice).final_response(tx).unwrap().status, 404);
    assert_eq!(net.phone(provider).count(Method::Invite), 0);
    // With the plan, an unauthenticated INVITE from an unknown address gets 407 first.
    net.engine.set_router(Box::new(TestPlan));
    let stranger = net.add_phone("101", "wrong", 5999);
    let invite = net.phone(stranger).invite("0039055999888");
    let tx = net.send(stranger, invite);
    assert_eq!(net.phone(stranger).final_response(tx).unwrap().status, 407);
    assert_eq!(net.phone(provider).count(Method::Invite), 0);
}
