//! B2BUA calls end to end (issue 2): two SIPp parties registered through the
//! real binary, the caller authenticating its INVITE (407), and every way a
//! call can end: answer and BYE from either side, busy, decline, no answer
//! (ring timeout), CANCEL, unknown and unregistered callees, and a server
//! shutdown in the middle of a call. Plus the requests any SIP server must
//! answer: OPTIONS, an unknown method, a malformed request.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::sipp::{register, RunningSipp, Sipp};
use common::{
    free_port, pbx, peer_available, wait_until, Pbx, Server, ServerOptions, User, LOCALHOST,
};

impl Pbx {
    /// Registers `user` from a fresh port and starts the UAS `scenario` on
    /// it, returning once SIPp holds the port (so the first INVITE is not
    /// lost to a closed port).
    fn callee(
        &self,
        user: &User,
        scenario: &str,
        configure: impl FnOnce(Sipp) -> Sipp,
    ) -> RunningSipp {
        let port = free_port();
        register(&self.server, user, port);
        let uas = configure(
            Sipp::uas(&self.server, scenario)
                .port(port)
                .service(&user.name),
        )
        .spawn();
        wait_until(
            Duration::from_secs(10),
            "the UAS SIPp to bind its port",
            || UdpSocket::bind((LOCALHOST, port)).is_err().then_some(()),
        );
        uas
    }

    /// alice's UAC for `scenario`, calling `target` (a name or an extension).
    fn caller(&self, scenario: &str, target: &str) -> Sipp {
        Sipp::uac(&self.server, scenario)
            .port(self.alice_port)
            .caller(&self.alice)
            .service(target)
    }
}

#[test]
fn answered_call_by_extension_caller_hangs_up() {
    if !peer_available("sipp") {
        return;
    }
    let pbx = pbx(ServerOptions::default());
    let bob = pbx.callee(&pbx.bob, "uas_answer.xml", |s| s);
    let call = pbx.caller("uac_call.xml", "102").pause_ms(200).run();
    call.assert_passed("alice calls 102: 407, INVITE with credentials, 180, 200, ACK, BYE, 200");
    bob.wait()
        .assert_passed("bob is rung, answers, gets the ACK and the relayed BYE");
}

#[test]
fn answered_call_by_name_callee_hangs_up() {
    if !peer_available("sipp") {
        return;
    }
    let pbx = pbx(ServerOptions::default());
    let bob = pbx.callee(&pbx.bob, "uas_hangup.xml", |s| s.pause_ms(200));
    let call = pbx.caller("uac_call_remote_hangup.xml", "bob").run();
    call.assert_passed("alice calls bob, bob hangs up: alice gets the BYE");
    bob.wait()
        .assert_passed("bob answers, sends BYE and gets 200 from the server");
}

#[test]
fn all_contacts_ring_in_parallel_and_the_first_answer_wins() {
    if !peer_available("sipp") {
        return;
    }
    let pbx = pbx(ServerOptions::default());
    // bob has two registered phones: one answers, the other only rings.
    let ringing = pbx.callee(&pbx.bob, "uas_ring_cancel.xml", |s| s);
    let answering = pbx.callee(&pbx.bob, "uas_answer.xml", |s| s);
    let call = pbx.caller("uac_call.xml", "102").pause_ms(200).run();
    call.assert_passed("alice's call to bob's two phones is answered");
    answering
        .wait()
        .assert_passed("the answering phone gets the ACK and the relayed BYE");
    ringing
        .wait()
        .assert_passed("the other phone was rung too and gets CANCEL once the first answered");
}

#[test]
fn busy_callee_486_is_relayed() {
    if !peer_available("sipp") {
        return;
    }
    let pbx = pbx(ServerOptions::default());
    let bob = pbx.callee(&pbx.bob, "uas_reject.xml", |s| {
        s.substitute("@CODE@", "486")
            .substitute("@REASON@", "Busy Here")
    });
    let call = pbx
        .caller("uac_rejected.xml", "102")
        .substitute("@FINAL@", "486")
        .run();
    call.assert_passed("bob's 486 reaches alice");
    bob.wait().assert_passed("bob's 486 is ACKed by the server");
}

#[test]
fn declining_callee_603_is_relayed() {
    if !peer_available("sipp") {
        return;
    }
    let pbx = pbx(ServerOptions::default());
    let bob = pbx.callee(&pbx.bob, "uas_reject.xml", |s| {
        s.substitute("@CODE@", "603")
            .substitute("@REASON@", "Decline")
    });
    let call = pbx
        .caller("uac_rejected.xml", "bob")
        .substitute("@FINAL@", "603")
        .run();
    call.assert_passed("bob's 603 reaches alice");
    bob.wait().assert_passed("bob's 603 is ACKed by the server");
}

#[test]
fn unanswered_call_times_out_with_408_and_cancels_the_callee() {
    if !peer_available("sipp") {
        return;
    }
    let pbx = pbx(ServerOptions::default().ring_timeout(2));
    let bob = pbx.callee(&pbx.bob, "uas_ring_cancel.xml", |s| s);
    let call = pbx
        .caller("uac_rejected.xml", "102")
        .substitute("@FINAL@", "408")
        .run();
    call.assert_passed("after --ring-timeout 2 alice gets 408");
    bob.wait()
        .assert_passed("bob's ringing leg gets CANCEL, answers 200 and 487, gets the ACK");
}

#[test]
fn caller_cancels_while_ringing() {
    if !peer_available("sipp") {
        return;
    }
    let pbx = pbx(ServerOptions::default());
    let bob = pbx.callee(&pbx.bob, "uas_ring_cancel.xml", |s| s);
    let call = pbx.caller("uac_cancel.xml", "102").run();
    call.assert_passed("alice CANCELs after 180: 200 for the CANCEL, 487, ACK");
    bob.wait()
        .assert_passed("the CANCEL is relayed to bob's leg");
}

#[test]
fn call_to_unknown_user_gets_404() {
    if !peer_available("sipp") {
        return;
    }
    let pbx = pbx(ServerOptions::default());
    pbx.caller("uac_rejected.xml", "nobody")
        .substitute("@FINAL@", "404")
        .run()
        .assert_passed("INVITE to an unknown user ends in 404");
    pbx.caller("uac_rejected.xml", "199")
        .substitute("@FINAL@", "404")
        .run()
        .assert_passed("INVITE to an unknown extension ends in 404");
}

#[test]
fn call_to_unregistered_user_gets_480() {
    if !peer_available("sipp") {
        return;
    }
    let pbx = pbx(ServerOptions::default());
    pbx.caller("uac_rejected.xml", "102")
        .substitute("@FINAL@", "480")
        .run()
        .assert_passed("INVITE to a known user without registration ends in 480");
}

#[test]
fn options_unknown_method_and_malformed_request_are_answered_over_udp() {
    if !peer_available("sipp") {
        return;
    }
    let server = Server::start(ServerOptions::default());
    Sipp::uac(&server, "uac_options_malformed.xml")
        .run()
        .assert_passed("OPTIONS 200, unknown method 501/405, malformed request 400 (UDP)");
}

#[test]
fn options_unknown_method_and_malformed_request_are_answered_over_tcp() {
    if !peer_available("sipp") {
        return;
    }
    let server = Server::start(ServerOptions::default());
    // Over TCP the malformed request is still well framed (Content-Length: 0):
    // the server must answer 400 and keep the connection.
    Sipp::uac(&server, "uac_options_malformed.xml")
        .tcp()
        .run()
        .assert_passed("OPTIONS 200, unknown method 501/405, malformed request 400 (TCP)");
}

#[test]
fn sigterm_during_a_call_sends_bye_to_both_parties_and_exits_0() {
    if !peer_available("sipp") {
        return;
    }
    let mut pbx = pbx(ServerOptions::default());
    let mut bob = pbx.callee(&pbx.bob, "uas_answer.xml", |s| s);
    let mut call = pbx.caller("uac_call_remote_hangup.xml", "102").spawn();
    call.wait_for_log("established", Duration::from_secs(20));
    bob.wait_for_log("established", Duration::from_secs(20));

    let status = pbx.server.terminate(Duration::from_secs(20));
    call.wait()
        .assert_passed("alice gets a BYE from the server shutting down");
    bob.wait()
        .assert_passed("bob gets a BYE from the server shutting down");
    assert!(
        status.success(),
        "switchboard serve exited with {status} after SIGTERM; log:\n{}",
        pbx.server.log()
    );
}

#[test]
fn registrations_survive_a_restart() {
    if !peer_available("sipp") {
        return;
    }
    let mut pbx = pbx(ServerOptions::default());
    let bob_port = free_port();
    register(&pbx.server, &pbx.bob, bob_port);
    pbx.server
        .wait_metric("switchboard_registrations", 2.0, Duration::from_secs(5));
    let status = pbx.server.terminate(Duration::from_secs(15));
    assert!(status.success(), "graceful stop: {status}");

    // Same data, same ports: the bindings are loaded from the database.
    pbx.server.restart();
    pbx.server
        .wait_metric("switchboard_registrations", 2.0, Duration::from_secs(5));
    let bob = Sipp::uas(&pbx.server, "uas_answer.xml")
        .port(bob_port)
        .service(&pbx.bob.name)
        .spawn();
    wait_until(Duration::from_secs(10), "bob's SIPp to bind", || {
        UdpSocket::bind((LOCALHOST, bob_port))
            .is_err()
            .then_some(())
    });
    pbx.caller("uac_call.xml", "102")
        .pause_ms(100)
        .run()
        .assert_passed("after the restart alice still reaches bob's registered phone");
    bob.wait()
        .assert_passed("bob's phone is rung from the restored binding");
}
