//! Scenario tests of the RFC 3261 §17 transaction layer in simulated time: `now` is a
//! fixed base plus offsets advanced by hand, and the two-endpoint tests run through an
//! in-memory network with seeded loss.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use switchboard_sip::message::reason_phrase;
use switchboard_sip::transaction::{
    new_branch, ClientTxId, ResponseInput, ServerInput, ServerTxId, Target, Timers,
    TransactionError, TransactionLayer, Transmit, Transport, TxEvent,
};
use switchboard_sip::{
    parse_datagram, HeaderName, Message, Method, NameAddr, Request, Response, Uri, Via,
};

// ---- helpers --------------------------------------------------------------------------

const CALL_ID: &str = "a84b4c76e66710@pc33.atlanta.example.com";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn target(transport: Transport, addr: &str) -> Target {
    Target {
        transport,
        addr: addr.parse::<SocketAddr>().unwrap(),
    }
}

fn alice(transport: Transport) -> Target {
    target(transport, "192.0.2.10:5060")
}

fn bob(transport: Transport) -> Target {
    target(transport, "192.0.2.20:5060")
}

/// A request built with the model's constructors, as the TU would.
fn request(method: Method, branch: &str, seq: u32) -> Request {
    let mut r = Request::new(
        method.clone(),
        Uri::sip(Some("bob"), "biloxi.example.com", None),
    );
    let via = Via::new("UDP", "pc33.atlanta.example.com", Some(5060), branch);
    r.headers.push(HeaderName::Via, via.to_string());
    r.headers
        .push(HeaderName::Route, "<sip:proxy.example.com;lr>");
    r.headers.push(HeaderName::MaxForwards, "70");
    r.headers.push(
        HeaderName::To,
        NameAddr::new(Uri::sip(Some("bob"), "biloxi.example.com", None)).to_string(),
    );
    let mut from = NameAddr::new(Uri::sip(Some("alice"), "atlanta.example.com", None));
    from.set_param("tag", Some("1928301774"));
    r.headers.push(HeaderName::From, from.to_string());
    r.headers.push(HeaderName::CallId, CALL_ID);
    r.headers.push(HeaderName::CSeq, format!("{seq} {method}"));
    r.headers
        .push(HeaderName::Contact, "<sip:alice@pc33.atlanta.example.com>");
    r
}

fn invite(branch: &str) -> Request {
    request(Method::Invite, branch, 1)
}

fn response(req: &Request, status: u16, to_tag: Option<&str>) -> Response {
    Response::for_request(req, status, reason_phrase(status), to_tag)
}

fn transmits(layer: &mut TransactionLayer) -> Vec<Transmit> {
    std::iter::from_fn(|| layer.poll_transmit()).collect()
}

fn events(layer: &mut TransactionLayer) -> Vec<TxEvent> {
    std::iter::from_fn(|| layer.poll_event()).collect()
}

fn parsed(t: &Transmit) -> Message {
    parse_datagram(&t.data).expect("the layer prints parseable messages")
}

fn parsed_request(t: &Transmit) -> Request {
    match parsed(t) {
        Message::Request(r) => r,
        Message::Response(r) => panic!("expected a request, got {}", r.status),
    }
}

fn parsed_response(t: &Transmit) -> Response {
    match parsed(t) {
        Message::Response(r) => r,
        Message::Request(r) => panic!("expected a response, got {}", r.method),
    }
}

/// Fires timers one deadline at a time until `until`; returns, for each deadline, its
/// offset from `t0`, the transmits and the events it produced.
fn run_timers(
    layer: &mut TransactionLayer,
    t0: Instant,
    until: Instant,
) -> Vec<(Duration, Vec<Transmit>, Vec<TxEvent>)> {
    let mut out = Vec::new();
    while let Some(at) = layer.poll_timeout() {
        if at > until {
            break;
        }
        layer.handle_timeout(at);
        out.push((at - t0, transmits(layer), events(layer)));
    }
    out
}

/// The offsets at which something was sent.
fn send_times(fired: &[(Duration, Vec<Transmit>, Vec<TxEvent>)]) -> Vec<u64> {
    fired
        .iter()
        .filter(|(_, t, _)| !t.is_empty())
        .map(|(at, _, _)| at.as_millis() as u64)
        .collect()
}

fn client_response(layer: &mut TransactionLayer, resp: Response, now: Instant) -> ClientTxId {
    match layer.handle_response(resp, now).unwrap() {
        ResponseInput::Matched(id) => id,
        ResponseInput::Stray(r) => panic!("unexpected stray {}", r.status),
    }
}

fn new_server_tx(layer: &mut TransactionLayer, req: Request, now: Instant) -> ServerTxId {
    match layer
        .handle_request(req, alice(Transport::Udp), now)
        .unwrap()
    {
        ServerInput::New(id, _) => id,
        other => panic!("expected a new transaction, got {other:?}"),
    }
}

fn statuses(events: &[TxEvent]) -> Vec<u16> {
    events
        .iter()
        .filter_map(|e| match e {
            TxEvent::Response { response, .. } => Some(response.status),
            _ => None,
        })
        .collect()
}

// ---- client INVITE --------------------------------------------------------------------

#[test]
fn invite_over_udp_retransmits_with_timer_a_then_times_out_with_timer_b() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::default();
    let id = layer
        .send_request(invite(&new_branch()), bob(Transport::Udp), t0)
        .unwrap();
    let first = transmits(&mut layer);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].target, bob(Transport::Udp));

    let fired = run_timers(&mut layer, t0, t0 + Duration::from_secs(60));
    // Intervals 0.5, 1, 2, 4, 8, 16 s (Timer A doubles without a cap), then B at 64*T1.
    assert_eq!(send_times(&fired), [500, 1500, 3500, 7500, 15500, 31500]);
    for (_, sent, _) in &fired {
        for t in sent {
            assert_eq!(
                t.data, first[0].data,
                "retransmissions resend the same bytes"
            );
        }
    }
    let (at, _, ev) = fired.last().unwrap();
    assert_eq!(*at, Duration::from_secs(32));
    assert_eq!(ev, &[TxEvent::Timeout { id }]);
    assert!(layer.is_empty());
    assert_eq!(layer.poll_timeout(), None);
}

#[test]
fn invite_over_tcp_is_sent_once() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::default();
    let req = invite(&new_branch());
    let id = layer
        .send_request(req.clone(), bob(Transport::Tcp), t0)
        .unwrap();
    assert_eq!(transmits(&mut layer).len(), 1);
    assert_eq!(layer.poll_timeout(), Some(t0 + Duration::from_secs(32)));
    let fired = run_timers(&mut layer, t0, t0 + Duration::from_secs(60));
    assert!(send_times(&fired).is_empty());
    assert_eq!(fired.last().unwrap().2, [TxEvent::Timeout { id }]);

    // A non-2xx final on TCP: ACK once, and Timer D is zero, so the transaction ends.
    let id = layer
        .send_request(invite(&new_branch()), bob(Transport::Tcp), t0)
        .unwrap();
    let sent = transmits(&mut layer);
    let req = parsed_request(&sent[0]);
    client_response(&mut layer, response(&req, 486, Some("x")), t0 + ms(10));
    assert_eq!(transmits(&mut layer).len(), 1);
    assert_eq!(statuses(&events(&mut layer)), [486]);
    assert!(layer.is_empty());
    let _ = id;
}

#[test]
fn non_2xx_final_is_acked_retransmission_reacked_and_timer_d_ends_it() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::default();
    let branch = new_branch();
    let req = invite(&branch);
    let id = layer
        .send_request(req.clone(), bob(Transport::Udp), t0)
        .unwrap();
    transmits(&mut layer);

    client_response(
        &mut layer,
        response(&req, 180, Some("8321234356")),
        t0 + ms(100),
    );
    let busy = response(&req, 486, Some("8321234356"));
    client_response(&mut layer, busy.clone(), t0 + ms(200));
    assert_eq!(statuses(&events(&mut layer)), [180, 486]);
    let sent = transmits(&mut layer);
    assert_eq!(sent.len(), 1);
    let ack = parsed_request(&sent[0]);

    // §17.1.1.3.
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.uri, req.uri);
    assert_eq!(ack.headers.count(&HeaderName::Via), 1);
    assert_eq!(ack.top_via().unwrap().branch(), Some(branch.as_str()));
    assert_eq!(ack.top_via().unwrap(), req.top_via().unwrap());
    assert_eq!(ack.to().unwrap().tag(), Some("8321234356"));
    assert_eq!(ack.from().unwrap(), req.from().unwrap());
    assert_eq!(ack.call_id().unwrap(), CALL_ID);
    let cseq = ack.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (1, Method::Ack));
    assert_eq!(
        ack.headers.get_all(&HeaderName::Route).collect::<Vec<_>>(),
        req.headers.get_all(&HeaderName::Route).collect::<Vec<_>>()
    );

    // The 486 again: absorbed, the same ACK resent.
    client_response(&mut layer, busy.clone(), t0 + ms(700));
    assert!(events(&mut layer).is_empty());
    assert_eq!(transmits(&mut layer), sent);

    // No retransmissions of the INVITE while in Completed; Timer D (32 s) ends it.
    let fired = run_timers(&mut layer, t0, t0 + Duration::from_secs(60));
    assert!(send_times(&fired).is_empty());
    assert_eq!(fired.last().unwrap().0, ms(200) + Duration::from_secs(32));
    assert!(layer.is_empty());
    assert_eq!(
        layer
            .handle_response(busy, t0 + Duration::from_secs(40))
            .unwrap(),
        ResponseInput::Stray(response(&req, 486, Some("8321234356")))
    );
    let _ = id;
}

#[test]
fn every_2xx_reaches_the_tu_while_accepted_then_is_stray() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::default();
    let req = invite(&new_branch());
    let id = layer
        .send_request(req.clone(), bob(Transport::Udp), t0)
        .unwrap();
    transmits(&mut layer);
    let ok = response(&req, 200, Some("a6c85cf"));
    assert_eq!(client_response(&mut layer, ok.clone(), t0 + ms(50)), id);
    assert_eq!(
        events(&mut layer),
        [TxEvent::Response {
            id,
            response: ok.clone()
        }]
    );
    // The layer never ACKs a 2xx; the TU does.
    assert!(transmits(&mut layer).is_empty());

    // A retransmitted 2xx (our ACK was lost) goes up again for the TU to re-ACK.
    client_response(&mut layer, ok.clone(), t0 + ms(550));
    assert_eq!(statuses(&events(&mut layer)), [200]);
    // A late provisional is dropped.
    client_response(
        &mut layer,
        response(&req, 180, Some("a6c85cf")),
        t0 + ms(560),
    );
    assert!(events(&mut layer).is_empty());

    // RFC 6026 Timer M: 64*T1 after the first 2xx.
    assert_eq!(
        layer.poll_timeout(),
        Some(t0 + ms(50) + Duration::from_secs(32))
    );
    run_timers(&mut layer, t0, t0 + Duration::from_secs(40));
    assert!(layer.is_empty());
    assert_eq!(
        layer.handle_response(ok.clone(), t0 + Duration::from_secs(40)),
        Ok(ResponseInput::Stray(ok))
    );
}

// ---- client non-INVITE ----------------------------------------------------------------

#[test]
fn non_invite_timer_e_is_capped_at_t2_and_timer_f_times_out() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::default();
    let id = layer
        .send_request(
            request(Method::Options, &new_branch(), 7),
            bob(Transport::Udp),
            t0,
        )
        .unwrap();
    transmits(&mut layer);
    let fired = run_timers(&mut layer, t0, t0 + Duration::from_secs(60));
    assert_eq!(
        send_times(&fired),
        [500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    let (at, _, ev) = fired.last().unwrap();
    assert_eq!(*at, Duration::from_secs(32));
    assert_eq!(ev, &[TxEvent::Timeout { id }]);
    assert!(layer.is_empty());
}

#[test]
fn non_invite_proceeding_retransmits_every_t2_and_completed_lingers_timer_k() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::default();
    let req = request(Method::Bye, &new_branch(), 2);
    layer
        .send_request(req.clone(), bob(Transport::Udp), t0)
        .unwrap();
    transmits(&mut layer);
    client_response(&mut layer, response(&req, 100, None), t0 + ms(100));
    assert_eq!(statuses(&events(&mut layer)), [100]);
    let fired = run_timers(&mut layer, t0, t0 + ms(9000));
    // E was armed at T1 in Trying; in Proceeding each firing re-arms it at T2.
    assert_eq!(send_times(&fired), [500, 4500, 8500]);
    client_response(&mut layer, response(&req, 200, None), t0 + ms(9000));
    assert_eq!(statuses(&events(&mut layer)), [200]);
    // Retransmitted final: absorbed.
    client_response(&mut layer, response(&req, 200, None), t0 + ms(9100));
    assert!(events(&mut layer).is_empty());
    assert_eq!(
        layer.poll_timeout(),
        Some(t0 + ms(9000) + Duration::from_secs(5))
    );
    let fired = run_timers(&mut layer, t0, t0 + Duration::from_secs(60));
    assert!(send_times(&fired).is_empty());
    assert!(layer.is_empty());
}

#[test]
fn transport_error_fails_pending_client_transactions_to_that_target() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::default();
    let a = layer
        .send_request(invite(&new_branch()), bob(Transport::Tcp), t0)
        .unwrap();
    let b = layer
        .send_request(
            request(Method::Options, &new_branch(), 3),
            alice(Transport::Tcp),
            t0,
        )
        .unwrap();
    layer.handle_transport_error(bob(Transport::Tcp), t0 + ms(5));
    assert_eq!(events(&mut layer), [TxEvent::TransportError { id: a }]);
    assert_eq!(layer.client_count(), 1);
    let _ = b;
}

#[test]
fn send_request_rejects_what_cannot_be_a_client_transaction() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::default();
    let mut ack = request(Method::Ack, &new_branch(), 1);
    assert_eq!(
        layer.send_request(ack.clone(), bob(Transport::Udp), t0),
        Err(TransactionError::AckNotATransaction)
    );
    ack.method = Method::Invite;
    ack.headers.remove(&HeaderName::Via);
    assert!(matches!(
        layer.send_request(ack, bob(Transport::Udp), t0),
        Err(TransactionError::Malformed(_))
    ));
    assert_eq!(
        layer.send_request(invite("1234"), bob(Transport::Udp), t0),
        Err(TransactionError::NoBranch)
    );
    let branch = new_branch();
    layer
        .send_request(invite(&branch), bob(Transport::Udp), t0)
        .unwrap();
    assert_eq!(
        layer.send_request(invite(&branch), bob(Transport::Udp), t0),
        Err(TransactionError::DuplicateBranch)
    );
    assert!(new_branch().starts_with("z9hG4bK"));
    assert_ne!(new_branch(), new_branch());
}

// ---- client CANCEL --------------------------------------------------------------------

#[test]
fn cancel_before_any_provisional_waits_for_one() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::default();
    let branch = new_branch();
    let req = invite(&branch);
    let id = layer
        .send_request(req.clone(), bob(Transport::Udp), t0)
        .unwrap();
    transmits(&mut layer);

    let cancel_id = layer.send_cancel(id, t0 + ms(100)).unwrap();
    assert_eq!(layer.send_cancel(id, t0 + ms(150)), Some(cancel_id));
    assert!(
        transmits(&mut layer).is_empty(),
        "§9.1: no CANCEL before a 1xx"
    );

    client_response(&mut layer, response(&req, 180, Some("t1")), t0 + ms(300));
    let sent = transmits(&mut layer);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].target, bob(Transport::Udp));
    let cancel = parsed_request(&sent[0]);
    assert_eq!(cancel.method, Method::Cancel);
    assert_eq!(cancel.uri, req.uri);
    assert_eq!(cancel.headers.count(&HeaderName::Via), 1);
    assert_eq!(cancel.top_via().unwrap(), req.top_via().unwrap());
    assert_eq!(cancel.to().unwrap(), req.to().unwrap());
    assert_eq!(cancel.from().unwrap(), req.from().unwrap());
    assert_eq!(cancel.call_id().unwrap(), CALL_ID);
    let cseq = cancel.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (1, Method::Cancel));
    assert_eq!(cancel.headers.count(&HeaderName::Route), 1);

    // The CANCEL and the INVITE are told apart by CSeq method.
    assert_eq!(
        client_response(&mut layer, response(&cancel, 200, Some("t1")), t0 + ms(400)),
        cancel_id
    );
    assert_eq!(
        client_response(&mut layer, response(&req, 487, Some("t1")), t0 + ms(450)),
        id
    );
    let ev = events(&mut layer);
    assert_eq!(statuses(&ev), [180, 200, 487]);
    assert!(matches!(ev[1], TxEvent::Response { id, .. } if id == cancel_id));
    let ack = parsed_request(&transmits(&mut layer)[0]);
    assert_eq!(ack.method, Method::Ack);
}

#[test]
fn deferred_cancel_is_dropped_when_a_final_response_comes_first() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::default();
    let req = invite(&new_branch());
    let id = layer
        .send_request(req.clone(), bob(Transport::Udp), t0)
        .unwrap();
    transmits(&mut layer);
    assert!(layer.send_cancel(id, t0 + ms(10)).is_some());
    client_response(&mut layer, response(&req, 603, Some("d")), t0 + ms(20));
    let sent = transmits(&mut layer);
    assert_eq!(sent.len(), 1);
    assert_eq!(parsed_request(&sent[0]).method, Method::Ack);
    assert_eq!(layer.send_cancel(id, t0 + ms(30)), None);
    run_timers(&mut layer, t0, t0 + Duration::from_secs(60));
    assert!(layer.is_empty());
}

#[test]
fn invite_without_final_after_cancel_is_given_up_after_64_t1() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::default();
    let req = invite(&new_branch());
    let id = layer
        .send_request(req.clone(), bob(Transport::Tcp), t0)
        .unwrap();
    client_response(&mut layer, response(&req, 183, Some("p")), t0 + ms(10));
    // Proceeding has no Timer B: it would ring forever without the TU.
    assert_eq!(layer.poll_timeout(), None);
    let cancel_id = layer.send_cancel(id, t0 + ms(1000)).unwrap();
    events(&mut layer);
    let fired = run_timers(&mut layer, t0, t0 + Duration::from_secs(60));
    let timeouts: Vec<_> = fired.iter().flat_map(|(_, _, e)| e.clone()).collect();
    assert_eq!(
        timeouts,
        [TxEvent::Timeout { id }, TxEvent::Timeout { id: cancel_id }]
    );
}

// ---- server INVITE --------------------------------------------------------------------

#[test]
fn retransmitted_invite_is_absorbed_and_the_last_provisional_resent() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::default();
    let req = invite(&new_branch());
    let id = new_server_tx(&mut layer, req.clone(), t0);
    assert_eq!(
        layer.handle_request(req.clone(), alice(Transport::Udp), t0 + ms(100)),
        Ok(ServerInput::Retransmission)
    );
    assert!(
        transmits(&mut layer).is_empty(),
        "nothing sent yet to resend"
    );
    layer
        .respond(id, response(&req, 180, Some("b1")), t0 + ms(150))
        .unwrap();
    let ringing = transmits(&mut layer);
    assert_eq!(ringing[0].target, alice(Transport::Udp));
    assert_eq!(parsed_response(&ringing[0]).status, 180);
    assert_eq!(
        layer.handle_request(req.clone(), alice(Transport::Udp), t0 + ms(500)),
        Ok(ServerInput::Retransmission)
    );
    assert_eq!(transmits(&mut layer), ringing);
    // The TU answered within 200 ms: no automatic 100.
    assert_eq!(layer.poll_timeout(), None);
}

#[test]
fn automatic_100_trying_after_200_ms() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::default();
    let req = invite(&new_branch());
    let id = new_server_tx(&mut layer, req.clone(), t0);
    assert!(transmits(&mut layer).is_empty());
    assert_eq!(layer.poll_timeout(), Some(t0 + ms(200)));
    layer.handle_timeout(t0 + ms(200));
    let sent = transmits(&mut layer);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].target, alice(Transport::Udp));
    let trying = parsed_response(&sent[0]);
    assert_eq!(trying.status, 100);
    assert_eq!(trying.top_via().unwrap(), req.top_via().unwrap());
    assert_eq!(trying.to().unwrap().tag(), None);
    // A retransmitted INVITE now gets the 100 again.
    layer
        .handle_request(req, alice(Transport::Udp), t0 + ms(500))
        .unwrap();
    assert_eq!(transmits(&mut layer), sent);
    let _ = id;
}

#[test]
fn non_2xx_final_retransmitted_by_timer_g_until_ack_then_timer_i() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::default();
    let branch = new_branch();
    let req = invite(&branch);
    let id = new_server_tx(&mut layer, req.clone(), t0);
    let busy = response(&req, 486, Some("b2"));
    layer.respond(id, busy, t0 + ms(100)).unwrap();
    let first = transmits(&mut layer);
    assert_eq!(first.len(), 1);
    let fired = run_timers(&mut layer, t0, t0 + ms(12_000));
    // G: T1, 2T1, 4T1, then capped at T2.
    assert_eq!(send_times(&fired), [600, 1600, 3600, 7600, 11600]);
    assert!(fired
        .iter()
        .all(|(_, t, _)| t.iter().all(|t| t.data == first[0].data)));

    // A retransmitted INVITE in Completed gets the final again.
    layer
        .handle_request(req.clone(), alice(Transport::Udp), t0 + ms(12_000))
        .unwrap();
    assert_eq!(transmits(&mut layer), first);

    // The ACK (built by a client layer from the response, §17.1.1.3).
    let mut uac = TransactionLayer::default();
    uac.send_request(req.clone(), bob(Transport::Udp), t0)
        .unwrap();
    uac.handle_response(parsed_response(&first[0]), t0).unwrap();
    let ack = parsed_request(&transmits(&mut uac)[1]);
    assert_eq!(
        layer.handle_request(ack.clone(), alice(Transport::Udp), t0 + ms(12_100)),
        Ok(ServerInput::AckAbsorbed)
    );
    // Confirmed: no more G; ACK retransmissions absorbed; Timer I = T4.
    assert_eq!(layer.poll_timeout(), Some(t0 + ms(17_100)));
    assert_eq!(
        layer.handle_request(ack, alice(Transport::Udp), t0 + ms(13_000)),
        Ok(ServerInput::AckAbsorbed)
    );
    let fired = run_timers(&mut layer, t0, t0 + Duration::from_secs(60));
    assert!(send_times(&fired).is_empty());
    assert!(layer.is_empty());
    assert!(events(&mut layer).is_empty());
}

#[test]
fn timer_h_reports_a_missing_ack() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::default();
    let req = invite(&new_branch());
    let id = new_server_tx(&mut layer, req.clone(), t0);
    layer
        .respond(id, response(&req, 404, Some("h")), t0)
        .unwrap();
    transmits(&mut layer);
    let fired = run_timers(&mut layer, t0, t0 + Duration::from_secs(60));
    assert_eq!(
        send_times(&fired),
        [500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    let (at, _, ev) = fired.last().unwrap();
    assert_eq!(*at, Duration::from_secs(32));
    assert_eq!(ev, &[TxEvent::ServerTimeout { id }]);
    assert!(layer.is_empty());
    assert_eq!(
        layer.respond(id, response(&req, 500, None), t0 + Duration::from_secs(33)),
        Err(TransactionError::UnknownTransaction)
    );
}

#[test]
fn server_over_tcp_does_not_retransmit_and_confirmed_ends_at_once() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::default();
    let req = invite(&new_branch());
    let id = match layer
        .handle_request(req.clone(), alice(Transport::Tcp), t0)
        .unwrap()
    {
        ServerInput::New(id, _) => id,
        other => panic!("{other:?}"),
    };
    let busy = response(&req, 486, Some("tcp"));
    layer.respond(id, busy.clone(), t0).unwrap();
    assert_eq!(transmits(&mut layer)[0].target, alice(Transport::Tcp));
    assert_eq!(layer.poll_timeout(), Some(t0 + Duration::from_secs(32)));
    let mut uac = TransactionLayer::default();
    uac.send_request(req, bob(Transport::Tcp), t0).unwrap();
    uac.handle_response(busy, t0).unwrap();
    let ack = parsed_request(&transmits(&mut uac)[1]);
    assert_eq!(
        layer.handle_request(ack, alice(Transport::Tcp), t0 + ms(50)),
        Ok(ServerInput::AckAbsorbed)
    );
    assert!(layer.is_empty(), "Timer I is zero on reliable transports");
}

#[test]
fn respond_checks_the_state() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::default();
    let req = request(Method::Options, &new_branch(), 1);
    let id = new_server_tx(&mut layer, req.clone(), t0);
    assert_eq!(
        layer.respond(id, response(&req, 99, None), t0),
        Err(TransactionError::InvalidStatus(99))
    );
    layer.respond(id, response(&req, 200, None), t0).unwrap();
    assert_eq!(
        layer.respond(id, response(&req, 500, None), t0),
        Err(TransactionError::FinalAlreadySent { status: 500 })
    );
    // Non-INVITE Completed: retransmissions get the final; Timer J = 64*T1.
    layer
        .handle_request(req.clone(), alice(Transport::Udp), t0 + ms(10))
        .unwrap();
    assert_eq!(transmits(&mut layer).len(), 2);
    assert_eq!(layer.poll_timeout(), Some(t0 + Duration::from_secs(32)));
}

// ---- server CANCEL --------------------------------------------------------------------

fn cancel_for(invite: &Request) -> Request {
    let branch = invite.top_via().unwrap().branch().unwrap().to_string();
    let mut c = request(Method::Cancel, &branch, invite.cseq().unwrap().seq);
    c.uri = invite.uri.clone();
    c
}

#[test]
fn cancel_matches_its_invite() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::default();
    let req = invite(&new_branch());
    let inv = new_server_tx(&mut layer, req.clone(), t0);
    let cancel = cancel_for(&req);
    let ServerInput::Cancel {
        cancel_tx,
        invite_tx,
        cancel_status,
        request,
    } = layer
        .handle_request(cancel.clone(), alice(Transport::Udp), t0 + ms(50))
        .unwrap()
    else {
        panic!("expected Cancel")
    };
    assert_eq!(invite_tx, Some(inv));
    assert_eq!(cancel_status, 200);
    assert_eq!(request, cancel);
    layer
        .respond(cancel_tx, response(&cancel, 200, Some("c")), t0 + ms(60))
        .unwrap();
    layer
        .respond(inv, response(&req, 487, Some("c")), t0 + ms(60))
        .unwrap();
    let sent: Vec<u16> = transmits(&mut layer)
        .iter()
        .map(|t| parsed_response(t).status)
        .collect();
    assert_eq!(sent, [200, 487]);
    // A retransmitted CANCEL gets its 200 again.
    assert_eq!(
        layer.handle_request(cancel, alice(Transport::Udp), t0 + ms(500)),
        Ok(ServerInput::Retransmission)
    );
    assert_eq!(parsed_response(&transmits(&mut layer)[0]).status, 200);
}

#[test]
fn cancel_for_an_unknown_invite_gets_481() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::default();
    let cancel = cancel_for(&invite(&new_branch()));
    let input = layer
        .handle_request(cancel, alice(Transport::Udp), t0)
        .unwrap();
    assert!(matches!(
        input,
        ServerInput::Cancel {
            invite_tx: None,
            cancel_status: 481,
            ..
        }
    ));
}

#[test]
fn cancel_crossing_a_200_does_not_ask_for_487() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::default();
    let req = invite(&new_branch());
    let inv = new_server_tx(&mut layer, req.clone(), t0);
    layer
        .respond(inv, response(&req, 200, Some("ok")), t0 + ms(100))
        .unwrap();
    let input = layer
        .handle_request(cancel_for(&req), alice(Transport::Udp), t0 + ms(110))
        .unwrap();
    assert!(matches!(
        input,
        ServerInput::Cancel {
            invite_tx: None,
            cancel_status: 200,
            ..
        }
    ));
    // And the INVITE cannot be answered again with a non-2xx.
    assert_eq!(
        layer.respond(inv, response(&req, 487, Some("ok")), t0 + ms(120)),
        Err(TransactionError::FinalAlreadySent { status: 487 })
    );
    // A retransmitted INVITE is absorbed in Accepted (RFC 6026), not a new transaction.
    transmits(&mut layer);
    assert_eq!(
        layer.handle_request(req, alice(Transport::Udp), t0 + ms(130)),
        Ok(ServerInput::Retransmission)
    );
    assert!(transmits(&mut layer).is_empty());
}

// ---- server 2xx retransmission --------------------------------------------------------

fn ack_for_2xx(req: &Request, ok: &Response) -> Request {
    let mut ack = request(Method::Ack, &new_branch(), req.cseq().unwrap().seq);
    ack.headers
        .set(HeaderName::To, ok.headers.get(&HeaderName::To).unwrap());
    ack
}

#[test]
fn a_2xx_is_retransmitted_until_its_ack() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::default();
    let req = invite(&new_branch());
    let inv = new_server_tx(&mut layer, req.clone(), t0);
    let ok = response(&req, 200, Some("2xx"));
    layer.respond(inv, ok.clone(), t0).unwrap();
    let first = transmits(&mut layer);
    assert_eq!(layer.awaiting_ack_count(), 1);
    let fired = run_timers(&mut layer, t0, t0 + ms(8000));
    assert_eq!(send_times(&fired), [500, 1500, 3500, 7500]);
    assert!(fired
        .iter()
        .all(|(_, t, _)| t.iter().all(|t| t.data == first[0].data)));

    // The ACK for a 2xx has its own branch: it matches no transaction and goes to the
    // TU, and the layer stops retransmitting.
    let ack = ack_for_2xx(&req, &ok);
    assert_eq!(
        layer.handle_request(ack.clone(), alice(Transport::Udp), t0 + ms(8000)),
        Ok(ServerInput::Ack2xx(ack))
    );
    assert_eq!(layer.awaiting_ack_count(), 0);
    assert!(!layer.ack_received(CALL_ID, 1), "already stopped");
    let fired = run_timers(&mut layer, t0, t0 + Duration::from_secs(60));
    assert!(send_times(&fired).is_empty());
    assert!(fired.iter().all(|(_, _, e)| e.is_empty()));
    assert!(quiet(&layer));
}

#[test]
fn ack_received_stops_the_2xx_and_ack_timeout_fires_without_it() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::default();
    let req = invite(&new_branch());
    let inv = new_server_tx(&mut layer, req.clone(), t0);
    layer
        .respond(inv, response(&req, 200, Some("t")), t0)
        .unwrap();
    transmits(&mut layer);
    run_timers(&mut layer, t0, t0 + ms(2000));
    assert!(layer.ack_received(CALL_ID, 1));
    assert!(send_times(&run_timers(&mut layer, t0, t0 + Duration::from_secs(60))).is_empty());

    // Over TCP too (reliability is hop by hop), and without an ACK: AckTimeout.
    let req = request(Method::Invite, &new_branch(), 2);
    let inv = match layer
        .handle_request(req.clone(), alice(Transport::Tcp), t0)
        .unwrap()
    {
        ServerInput::New(id, _) => id,
        other => panic!("{other:?}"),
    };
    layer
        .respond(inv, response(&req, 200, Some("t")), t0)
        .unwrap();
    transmits(&mut layer);
    let fired = run_timers(&mut layer, t0, t0 + Duration::from_secs(60));
    assert_eq!(
        send_times(&fired),
        [500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    let ev: Vec<_> = fired.into_iter().flat_map(|(_, _, e)| e).collect();
    assert_eq!(ev, [TxEvent::AckTimeout { id: inv }]);
    assert!(quiet(&layer));
}

// ---- RFC 2543 peers -------------------------------------------------------------------

#[test]
fn rfc2543_requests_match_without_the_magic_cookie() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::default();
    let mut req = invite("unused");
    // An RFC 2543 Via: no branch at all.
    req.headers
        .set(HeaderName::Via, "SIP/2.0/UDP pc33.atlanta.example.com:5060");
    let inv = new_server_tx(&mut layer, req.clone(), t0);
    assert_eq!(
        layer.handle_request(req.clone(), alice(Transport::Udp), t0 + ms(500)),
        Ok(ServerInput::Retransmission)
    );
    // Another CSeq is another transaction.
    let mut other = req.clone();
    other.headers.set(HeaderName::CSeq, "2 INVITE");
    assert!(matches!(
        layer.handle_request(other, alice(Transport::Udp), t0 + ms(600)),
        Ok(ServerInput::New(..))
    ));
    // CANCEL: same Request-URI, tags, Call-ID, CSeq number and Via.
    let mut cancel = req.clone();
    cancel.method = Method::Cancel;
    cancel.headers.set(HeaderName::CSeq, "1 CANCEL");
    assert!(matches!(
        layer.handle_request(cancel, alice(Transport::Udp), t0 + ms(700)),
        Ok(ServerInput::Cancel { invite_tx: Some(id), cancel_status: 200, .. }) if id == inv
    ));
    let busy = response(&req, 487, Some("legacy"));
    layer.respond(inv, busy.clone(), t0 + ms(800)).unwrap();
    // The ACK carries the To tag of our response, which the INVITE did not.
    let mut ack = req.clone();
    ack.method = Method::Ack;
    ack.headers.set(HeaderName::CSeq, "1 ACK");
    ack.headers
        .set(HeaderName::To, busy.headers.get(&HeaderName::To).unwrap());
    let mut wrong_tag = ack.clone();
    wrong_tag.headers.set(
        HeaderName::To,
        "<sip:bob@biloxi.example.com>;tag=someone-else",
    );
    assert!(matches!(
        layer.handle_request(wrong_tag, alice(Transport::Udp), t0 + ms(900)),
        Ok(ServerInput::Ack2xx(_))
    ));
    assert_eq!(
        layer.handle_request(ack, alice(Transport::Udp), t0 + ms(900)),
        Ok(ServerInput::AckAbsorbed)
    );
}

#[test]
fn rfc3261_matching_uses_sent_by_and_method() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::default();
    let branch = new_branch();
    let req = invite(&branch);
    new_server_tx(&mut layer, req.clone(), t0);
    // Same branch from another sent-by: a different transaction.
    let mut elsewhere = req.clone();
    elsewhere.headers.set(
        HeaderName::Via,
        Via::new("UDP", "client.biloxi.example.com", Some(5060), &branch).to_string(),
    );
    assert!(matches!(
        layer.handle_request(elsewhere, alice(Transport::Udp), t0),
        Ok(ServerInput::New(..))
    ));
    // Same branch, default port spelled out: the same sent-by.
    let mut spelled = req.clone();
    spelled.headers.set(
        HeaderName::Via,
        Via::new("UDP", "PC33.atlanta.example.com", None, &branch).to_string(),
    );
    assert_eq!(
        layer.handle_request(spelled, alice(Transport::Udp), t0),
        Ok(ServerInput::Retransmission)
    );
    // A request without Via is refused with the status to answer.
    let mut bad = req;
    bad.headers.remove(&HeaderName::Via);
    let err = layer
        .handle_request(bad, alice(Transport::Udp), t0)
        .unwrap_err();
    assert_eq!(err.response_status(), Some(400));
}

// ---- from wire text -------------------------------------------------------------------

/// RFC 3665 §3.1 (F1), lightly trimmed.
const WIRE_INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9\r\n\
Max-Forwards: 70\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
Call-ID: 3848276298220188511@atlanta.example.com\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@client.atlanta.example.com;transport=udp>\r\n\
Content-Length: 0\r\n\r\n";

const WIRE_ACK: &str = "ACK sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9\r\n\
Max-Forwards: 70\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n\
To: Bob <sip:bob@biloxi.example.com>;tag=314159\r\n\
Call-ID: 3848276298220188511@atlanta.example.com\r\n\
CSeq: 1 ACK\r\n\
Content-Length: 0\r\n\r\n";

fn wire_request(text: &str) -> Request {
    match parse_datagram(text.as_bytes()).unwrap() {
        Message::Request(r) => r,
        Message::Response(_) => panic!("not a request"),
    }
}

#[test]
fn wire_invite_rejected_then_acked() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::default();
    let req = wire_request(WIRE_INVITE);
    let id = new_server_tx(&mut layer, req.clone(), t0);
    layer
        .respond(id, response(&req, 486, Some("314159")), t0)
        .unwrap();
    let sent = parsed_response(&transmits(&mut layer)[0]);
    assert_eq!(sent.status, 486);
    assert_eq!(sent.to().unwrap().tag(), Some("314159"));

    // The ACK from the wire matches the transaction; so does the client layer's own ACK
    // for the same response.
    assert_eq!(
        layer.handle_request(wire_request(WIRE_ACK), alice(Transport::Udp), t0 + ms(30)),
        Ok(ServerInput::AckAbsorbed)
    );
    let mut uac = TransactionLayer::default();
    uac.send_request(req.clone(), bob(Transport::Udp), t0)
        .unwrap();
    assert!(matches!(
        uac.handle_response(sent, t0),
        Ok(ResponseInput::Matched(_))
    ));
    let ack = parsed_request(&transmits(&mut uac)[1]);
    let expected = wire_request(WIRE_ACK);
    assert_eq!(ack.uri, expected.uri);
    assert_eq!(ack.top_via().unwrap(), expected.top_via().unwrap());
    assert_eq!(ack.to().unwrap(), expected.to().unwrap());
    assert_eq!(ack.cseq().unwrap(), expected.cseq().unwrap());
}

// ---- two endpoints through a lossy network -------------------------------------------

/// One packet in flight.
struct Packet {
    deliver_at: Instant,
    to: usize,
    from: Target,
    data: Arc<[u8]>,
}

/// A UAC layer and a UAS layer joined by an in-memory UDP network that drops each packet
/// with probability `loss` and delays the rest by `latency` (quinn's `Pair` idea). The
/// UAS TU rings at once and answers 200 one second later; the UAC TU ACKs every 2xx.
struct Pair {
    now: Instant,
    layers: [TransactionLayer; 2],
    addrs: [Target; 2],
    rng: StdRng,
    loss: f64,
    latency: Duration,
    in_flight: VecDeque<Packet>,
    dropped: usize,
    /// UAS: when to answer which transaction with 200.
    answer_at: Vec<(Instant, ServerTxId, Request)>,
    uac_statuses: Vec<(ClientTxId, u16)>,
    uac_timeouts: usize,
    uas_acks: usize,
    uas_new: usize,
    uas_events: Vec<TxEvent>,
}

const UAC: usize = 0;
const UAS: usize = 1;

impl Pair {
    fn new(seed: u64, loss: f64) -> Pair {
        Pair {
            now: Instant::now(),
            layers: [TransactionLayer::default(), TransactionLayer::default()],
            addrs: [alice(Transport::Udp), bob(Transport::Udp)],
            rng: StdRng::seed_from_u64(seed),
            loss,
            latency: ms(20),
            in_flight: VecDeque::new(),
            dropped: 0,
            answer_at: Vec::new(),
            uac_statuses: Vec::new(),
            uac_timeouts: 0,
            uas_acks: 0,
            uas_new: 0,
            uas_events: Vec::new(),
        }
    }

    /// Moves everything queued onto the network (or drops it).
    fn flush(&mut self) {
        for from in [UAC, UAS] {
            while let Some(t) = self.layers[from].poll_transmit() {
                let to = if t.target.addr == self.addrs[UAC].addr {
                    UAC
                } else {
                    UAS
                };
                if self.rng.gen_bool(self.loss) {
                    self.dropped += 1;
                    continue;
                }
                self.in_flight.push_back(Packet {
                    deliver_at: self.now + self.latency,
                    to,
                    from: self.addrs[from],
                    data: t.data,
                });
            }
        }
    }

    /// The TUs react to events.
    fn tus(&mut self) {
        while let Some(ev) = self.layers[UAC].poll_event() {
            match ev {
                TxEvent::Response { id, response } => {
                    self.uac_statuses.push((id, response.status));
                    let cseq = response.cseq().unwrap();
                    if cseq.method == Method::Invite && response.is_success() {
                        let mut ack = request(Method::Ack, &new_branch(), cseq.seq);
                        ack.headers.set(
                            HeaderName::To,
                            response.headers.get(&HeaderName::To).unwrap(),
                        );
                        self.layers[UAC].send_ack(&ack, self.addrs[UAS]);
                    }
                }
                TxEvent::Timeout { .. } => self.uac_timeouts += 1,
                other => panic!("UAC got {other:?}"),
            }
        }
        while let Some(ev) = self.layers[UAS].poll_event() {
            self.uas_events.push(ev);
        }
    }

    fn deliver(&mut self, p: Packet) {
        let now = self.now;
        match parse_datagram(&p.data).unwrap() {
            Message::Response(r) => {
                self.layers[p.to].handle_response(r, now).unwrap();
            }
            Message::Request(r) => {
                match self.layers[p.to].handle_request(r, p.from, now).unwrap() {
                    ServerInput::New(id, req) => {
                        self.uas_new += 1;
                        let layer = &mut self.layers[p.to];
                        if req.method == Method::Invite {
                            layer
                                .respond(id, response(&req, 180, Some("uas")), now)
                                .unwrap();
                            self.answer_at.push((now + Duration::from_secs(1), id, req));
                        } else {
                            layer
                                .respond(id, response(&req, 200, Some("uas")), now)
                                .unwrap();
                        }
                    }
                    ServerInput::Ack2xx(_) => self.uas_acks += 1,
                    ServerInput::Retransmission | ServerInput::AckAbsorbed => {}
                    ServerInput::Cancel { .. } => panic!("no CANCEL in this scenario"),
                }
            }
        }
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let timers = self.layers.iter().filter_map(|l| l.poll_timeout());
        let packets = self.in_flight.iter().map(|p| p.deliver_at);
        let answers = self.answer_at.iter().map(|(at, _, _)| *at);
        timers.chain(packets).chain(answers).min()
    }

    /// Runs until nothing is in flight and no timer is armed, or `limit` passes.
    fn drive(&mut self, limit: Duration) {
        let end = self.now + limit;
        self.flush();
        self.tus();
        self.flush();
        while let Some(at) = self.next_wakeup() {
            if at > end {
                break;
            }
            self.now = self.now.max(at);
            let now = self.now;
            for layer in &mut self.layers {
                if layer.poll_timeout().is_some_and(|t| t <= now) {
                    layer.handle_timeout(now);
                }
            }
            let due: Vec<(Instant, ServerTxId, Request)> = {
                let (due, later) = self.answer_at.drain(..).partition(|(t, _, _)| *t <= now);
                self.answer_at = later;
                due
            };
            for (_, id, req) in due {
                self.layers[UAS]
                    .respond(id, response(&req, 200, Some("uas")), now)
                    .unwrap();
            }
            while self.in_flight.front().is_some_and(|p| p.deliver_at <= now) {
                let p = self.in_flight.pop_front().unwrap();
                self.deliver(p);
            }
            self.tus();
            self.flush();
        }
    }
}

/// No transaction, no 2xx waiting for an ACK, no timer.
fn quiet(layer: &TransactionLayer) -> bool {
    layer.is_empty() && layer.awaiting_ack_count() == 0 && layer.poll_timeout().is_none()
}

#[test]
fn invite_and_options_complete_through_30_percent_loss() {
    let mut total_dropped = 0;
    for seed in 0..20 {
        let mut pair = Pair::new(seed, 0.3);
        let t0 = pair.now;
        let invite_id = pair.layers[UAC]
            .send_request(invite(&new_branch()), pair.addrs[UAS], t0)
            .unwrap();
        let options_id = pair.layers[UAC]
            .send_request(
                request(Method::Options, &new_branch(), 5),
                pair.addrs[UAS],
                t0,
            )
            .unwrap();
        pair.drive(Duration::from_secs(120));

        let invite_finals: Vec<u16> = pair
            .uac_statuses
            .iter()
            .filter(|(id, s)| *id == invite_id && *s >= 200)
            .map(|(_, s)| *s)
            .collect();
        assert!(
            !invite_finals.is_empty() && invite_finals.iter().all(|s| *s == 200),
            "seed {seed}: INVITE finals {invite_finals:?}"
        );
        let options_finals: Vec<u16> = pair
            .uac_statuses
            .iter()
            .filter(|(id, s)| *id == options_id && *s >= 200)
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(
            options_finals,
            [200],
            "seed {seed}: a non-INVITE final goes up once"
        );
        assert_eq!(pair.uac_timeouts, 0, "seed {seed}");
        assert_eq!(
            pair.uas_new, 2,
            "seed {seed}: retransmissions never make new transactions"
        );
        assert!(pair.uas_acks >= 1, "seed {seed}: the 2xx was ACKed");
        assert!(
            pair.uas_events.is_empty(),
            "seed {seed}: {:?}",
            pair.uas_events
        );
        assert!(pair.layers.iter().all(quiet), "seed {seed}");
        total_dropped += pair.dropped;
    }
    assert!(total_dropped > 20, "the network did drop packets");
}

#[test]
fn lossless_pair_exchanges_the_minimum() {
    let mut pair = Pair::new(1, 0.0);
    let t0 = pair.now;
    pair.layers[UAC]
        .send_request(invite(&new_branch()), pair.addrs[UAS], t0)
        .unwrap();
    pair.drive(Duration::from_secs(120));
    let statuses: Vec<u16> = pair.uac_statuses.iter().map(|(_, s)| *s).collect();
    assert_eq!(statuses, [180, 200]);
    assert_eq!(pair.uas_acks, 1);
    assert!(pair.layers.iter().all(quiet));
}

#[test]
fn timers_default_to_the_rfc_values() {
    let t = Timers::default();
    assert_eq!((t.t1, t.t2, t.t4), (ms(500), ms(4000), ms(5000)));
    assert_eq!(t.transaction_timeout(), Duration::from_secs(32));
    assert_eq!(t.timer_d(Transport::Udp), Duration::from_secs(32));
    assert_eq!(t.timer_d(Transport::Tcp), Duration::ZERO);
    assert_eq!(t.timer_i(Transport::Udp), ms(5000));
    assert_eq!(t.timer_k(Transport::Tcp), Duration::ZERO);
    assert_eq!(t.timer_j(Transport::Udp), Duration::from_secs(32));
}

#[test]
fn ten_thousand_transactions_share_one_schedule() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::default();
    let n = 10_000u64;
    for i in 0..n {
        // Staggered starts: deadlines of different transactions interleave.
        layer
            .send_request(
                request(Method::Options, &new_branch(), 1),
                bob(Transport::Udp),
                t0 + ms(i % 1000),
            )
            .unwrap();
    }
    assert_eq!(layer.len(), n as usize);
    assert_eq!(layer.poll_timeout(), Some(t0 + ms(500)));
    let mut last = t0;
    let (mut sent, mut timeouts) = (0usize, 0usize);
    while let Some(at) = layer.poll_timeout() {
        assert!(at >= last, "deadlines come out in order");
        last = at;
        layer.handle_timeout(at);
        sent += transmits(&mut layer).len();
        timeouts += events(&mut layer).len();
    }
    assert_eq!(
        sent,
        n as usize * 11,
        "one send plus ten retransmissions each"
    );
    assert_eq!(timeouts, n as usize);
    assert!(layer.is_empty());
}

/// An ACK for a non-2xx that carries a new branch (SIPp's `[branch]` does this) still
/// stops the final response's retransmissions: matched by Call-ID, CSeq and our To tag.
#[test]
fn ack_with_a_new_branch_still_confirms_a_rejected_invite() {
    let t0 = Instant::now();
    let mut layer = TransactionLayer::default();
    let req = invite(&new_branch());
    let id = new_server_tx(&mut layer, req.clone(), t0);
    let challenge = response(&req, 407, Some("ours"));
    layer.respond(id, challenge.clone(), t0).unwrap();
    let _ = transmits(&mut layer);
    let mut uac = TransactionLayer::default();
    uac.send_request(req.clone(), bob(Transport::Udp), t0)
        .unwrap();
    uac.handle_response(challenge, t0).unwrap();
    let mut ack = parsed_request(&transmits(&mut uac)[1]);
    let mut via = ack.top_via().unwrap();
    via.set_param("branch", Some(&new_branch()));
    ack.headers.set(HeaderName::Via, via.to_string());
    assert_eq!(
        layer.handle_request(ack.clone(), alice(Transport::Udp), t0 + ms(10)),
        Ok(ServerInput::AckAbsorbed)
    );
    // No Timer G retransmission any more: only Timer I remains.
    assert_eq!(
        layer.poll_timeout(),
        Some(t0 + ms(10) + Duration::from_secs(5))
    );
    // The same ACK with another To tag is not ours: it goes up as an ACK for a 2xx.
    ack.headers
        .set(HeaderName::To, "<sip:bob@example.com>;tag=other");
    let mut other = ack;
    via.set_param("branch", Some(&new_branch()));
    other.headers.set(HeaderName::Via, via.to_string());
    assert!(matches!(
        layer.handle_request(other, alice(Transport::Udp), t0 + ms(20)),
        Ok(ServerInput::Ack2xx(_))
    ));
}
