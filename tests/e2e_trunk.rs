//! SIP trunks end to end (issue 5): a SIPp "provider" acting as registrar and gateway.
//! Switchboard registers with it (digest checked by SIPp's verifyauth), the provider
//! calls a DID that reaches a registered user, and (with a dialplan route) a user's call
//! goes out through the trunk with the provider's credentials.

mod common;

use std::net::UdpSocket;
use std::path::PathBuf;
use std::time::Duration;

use common::sipp::{register, RunningSipp, Sipp};
use common::{
    free_port, peer_available, wait_until, Server, ServerOptions, TempDir, User, LOCALHOST,
};

const DEADLINE: Duration = Duration::from_secs(15);

/// Starts the provider SIPp on a free port (serving `transactions` REGISTERs/calls) and
/// waits until it holds the port.
fn provider(dir: PathBuf, transactions: u32) -> (RunningSipp, u16) {
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let sipp = Sipp::with_dir(dir, "provider.xml", None)
        .port(port)
        .arg("-m")
        .arg(&transactions.to_string())
        .spawn();
    wait_until(DEADLINE, "the provider SIPp to bind its port", || {
        UdpSocket::bind((LOCALHOST, port)).is_err().then_some(())
    });
    (sipp, port)
}

fn config(dir: &TempDir, provider_port: u16, extra: &str) -> PathBuf {
    let path = dir.path().join("switchboard.toml");
    std::fs::write(
        &path,
        format!(
            "[[trunks]]\nname = \"provider\"\ndomain = \"voip.example.net\"\n\
             gateways = [\"127.0.0.1:{provider_port}\"]\nusername = \"acct42\"\n\
             password = \"trunk-secret\"\nexpires = 60\ncaller_id = \"+390551234567\"\n{extra}"
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_trunk_registers_and_an_inbound_did_call_reaches_the_user() {
    if !peer_available("sipp") {
        return;
    }
    let bob = User::new("bob", "bob-secret").extension("102");
    let dir = TempDir::new("trunk");
    let (mut provider, provider_port) = provider(dir.path().join("provider"), 1);
    let cfg = config(&dir, provider_port, "");
    let server = Server::start(
        ServerOptions::default()
            .user(bob.clone())
            .env("SWITCHBOARD_CONFIG", cfg.to_str().unwrap()),
    );
    provider.wait_for_log("registered", DEADLINE);
    server.wait_metric("switchboard_trunks_registered", 1.0, DEADLINE);
    provider
        .wait()
        .assert_passed("the provider challenged and accepted our REGISTER");

    // Bob's phone answers the DID call from the provider.
    let bob_port = free_port();
    register(&server, &bob, bob_port);
    let bob_uas = Sipp::uas(&server, "uas_answer.xml")
        .port(bob_port)
        .service("bob")
        .spawn();
    wait_until(DEADLINE, "bob's SIPp to bind", || {
        UdpSocket::bind((LOCALHOST, bob_port))
            .is_err()
            .then_some(())
    });
    let inbound = Sipp::uac(&server, "provider_call_in.xml")
        .key("account", "acct42")
        .key("did", "102")
        .pause_ms(500)
        .run();
    inbound.assert_passed("the provider's call to DID 102 was answered without credentials");
    bob_uas
        .wait()
        .assert_passed("bob answered the DID call and got the provider's BYE");
    let log = server.log();
    assert!(log.contains("trunk registered"), "{log}");
}
