//! Two real softphones (baresip) register through the real binary with digest
//! auth and call each other by extension (issue 2).

mod common;

use std::time::Duration;

use common::baresip::{AnswerMode, Baresip};
use common::{peer_available, Server, ServerOptions, User};

const CALL_DEADLINE: Duration = Duration::from_secs(15);

#[test]
fn two_baresip_phones_register_and_call_by_extension() {
    if !peer_available("baresip") {
        return;
    }
    let alice = User::new("alice", "alice-secret").extension("101");
    let bob = User::new("bob", "bob-secret").extension("102");
    let server = Server::start(
        ServerOptions::default()
            .user(alice.clone())
            .user(bob.clone()),
    );

    let mut phone_a = Baresip::start(&server, &alice, AnswerMode::Manual);
    let mut phone_b = Baresip::start(&server, &bob, AnswerMode::Auto);
    phone_a.wait_registered();
    phone_b.wait_registered();

    phone_a.dial(&format!("sip:102@{}", server.sip));
    let b_incoming = phone_b.wait_event("CALL_ESTABLISHED", CALL_DEADLINE);
    assert_eq!(b_incoming["direction"], "incoming", "{b_incoming}");
    let a_outgoing = phone_a.wait_event("CALL_ESTABLISHED", CALL_DEADLINE);
    assert_eq!(a_outgoing["direction"], "outgoing", "{a_outgoing}");

    phone_a.hangup();
    phone_b.wait_event("CALL_CLOSED", CALL_DEADLINE);
    phone_a.wait_event("CALL_CLOSED", CALL_DEADLINE);
}
