//! Bad input against the real binary: configuration errors stop start-up with the file, line
//! and field; malformed SIP gets 400 or is dropped and counted; oversize messages, stalled
//! and garbage TCP peers are refused; and the server keeps serving through all of it.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, http_get, metric_sum, stop_child, wait_until, TempDir};

const SWITCHBOARD: &str = env!("CARGO_BIN_EXE_switchboard");

/// A server started with a config file, so the limits can be made small.
struct Limited {
    child: Child,
    sip: SocketAddr,
    http: SocketAddr,
    dir: TempDir,
}

impl Limited {
    fn start(config: &str) -> Limited {
        let dir = TempDir::new("bad-input");
        let sip: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let cfg = dir.path().join("switchboard.toml");
        std::fs::write(
            &cfg,
            format!("[sip]\nlisten = \"{sip}\"\n[http]\nlisten = \"{http}\"\n{config}"),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(SWITCHBOARD)
            .arg("--config")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(dir.path())
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn switchboard");
        let server = Limited {
            child,
            sip,
            http,
            dir,
        };
        wait_until(Duration::from_secs(20), "server healthy", || {
            http_get(server.http, "/healthz")
                .ok()
                .filter(|r| r.status == 200)
        });
        server
    }

    fn metric(&self, name: &str) -> f64 {
        let body = http_get(self.http, "/metrics").unwrap().body;
        metric_sum(&body, name).unwrap_or_else(|| panic!("no metric {name} in:\n{body}"))
    }

    fn wait_metric(&self, name: &str, at_least: f64) {
        wait_until(Duration::from_secs(10), name, || {
            (self.metric(name) >= at_least).then_some(())
        });
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(10));
        if std::thread::panicking() {
            eprintln!("--- server log ---\n{}", self.log());
        }
    }
}

fn options(call_id: &str, method: &str, via_port: u16) -> String {
    format!(
        "{method} sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{via_port};branch=z9hG4bK{call_id}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:127.0.0.1>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

fn udp_exchange(sock: &UdpSocket, to: SocketAddr, data: &[u8]) -> Option<String> {
    sock.send_to(data, to).unwrap();
    let mut buf = [0u8; 65_535];
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(_) => None,
    }
}

/// Reads until the server closes the connection (Ok(true)) or the deadline passes.
fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => {}
        }
    }
    false
}

#[test]
fn a_bad_config_value_stops_start_up_naming_file_line_and_field() {
    let dir = TempDir::new("bad-config");
    let cfg = dir.path().join("pbx.toml");
    std::fs::write(
        &cfg,
        "domain = \"pbx.example.com\"\n\n[sip]\nlisten = \"nonsense\"\n",
    )
    .unwrap();
    let out = Command::new(SWITCHBOARD)
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path())
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "{}:4:10: sip.listen: \"nonsense\" is not an address and port",
        cfg.display()
    );
    assert!(stderr.contains(&expected), "stderr: {stderr}");

    std::fs::write(&cfg, "[registrar]\nmax_expires = 3600\nmin_expirs = 5\n").unwrap();
    let out = Command::new(SWITCHBOARD)
        .arg("--config")
        .arg(&cfg)
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:3:1:", cfg.display())) && stderr.contains("min_expirs"),
        "stderr: {stderr}"
    );
}

#[test]
fn malformed_udp_gets_400_or_is_dropped_and_counted() {
    let server = Limited::start("");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();

    // Readable enough to answer: a Content-Length larger than the body.
    let bad_length =
        options("cl1", "OPTIONS", port).replace("Content-Length: 0", "Content-Length: 99");
    let answer = udp_exchange(&sock, server.sip, bad_length.as_bytes()).expect("a 400");
    assert!(answer.starts_with("SIP/2.0 400 "), "{answer}");
    assert!(answer.contains("Call-ID: cl1"), "{answer}");

    // Missing Call-ID: parsed, then refused by the request checks.
    let no_call_id = options("x", "OPTIONS", port).replace("Call-ID: x\r\n", "");
    let answer = udp_exchange(&sock, server.sip, no_call_id.as_bytes()).expect("a 400");
    assert!(answer.starts_with("SIP/2.0 400 "), "{answer}");

    // Garbage cannot be answered: dropped, counted.
    sock.send_to(b"\x00\x01garbage that is not SIP\r\n\r\n", server.sip)
        .unwrap();
    server.wait_metric("switchboard_sip_parse_errors_total", 2.0);

    // An unknown method is 501, a known one we do not serve is 405 with Allow.
    let answer = udp_exchange(
        &sock,
        server.sip,
        options("m1", "FROBNICATE", port).as_bytes(),
    )
    .unwrap();
    assert!(answer.starts_with("SIP/2.0 501 "), "{answer}");
    let answer = udp_exchange(
        &sock,
        server.sip,
        options("m2", "SUBSCRIBE", port).as_bytes(),
    )
    .unwrap();
    assert!(
        answer.starts_with("SIP/2.0 405 ") && answer.contains("Allow: "),
        "{answer}"
    );

    // And the server still answers a good request.
    let answer =
        udp_exchange(&sock, server.sip, options("ok", "OPTIONS", port).as_bytes()).unwrap();
    assert!(answer.starts_with("SIP/2.0 200 "), "{answer}");
}

#[test]
fn oversize_messages_are_refused_on_udp_and_tcp() {
    let server = Limited::start("[limits]\nmax_message_size = 2000\n");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let big = options("big", "OPTIONS", port).replace(
        "Content-Length: 0\r\n",
        &format!("X-Padding: {}\r\nContent-Length: 0\r\n", "a".repeat(3000)),
    );
    assert_eq!(udp_exchange(&sock, server.sip, big.as_bytes()), None);
    server.wait_metric("switchboard_sip_oversize_total", 1.0);

    // On TCP, a header block that never ends within the limit closes the connection.
    let mut tcp = TcpStream::connect(server.sip).unwrap();
    tcp.write_all(
        format!(
            "OPTIONS sip:127.0.0.1 SIP/2.0\r\nX-Padding: {}",
            "b".repeat(4000)
        )
        .as_bytes(),
    )
    .unwrap();
    assert!(closed_by_server(&mut tcp, Duration::from_secs(10)));

    let answer =
        udp_exchange(&sock, server.sip, options("ok", "OPTIONS", port).as_bytes()).unwrap();
    assert!(answer.starts_with("SIP/2.0 200 "), "{answer}");
}

#[test]
fn tcp_peers_that_stall_or_send_garbage_are_disconnected() {
    let server = Limited::start("[limits]\ntcp_partial_timeout = 1\n");

    // A good request over TCP is answered on the same connection.
    let mut good = TcpStream::connect(server.sip).unwrap();
    let port = good.local_addr().unwrap().port();
    good.write_all(
        options("t1", "OPTIONS", port)
            .replace("UDP", "TCP")
            .as_bytes(),
    )
    .unwrap();
    good.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    let n = good.read(&mut buf).unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("SIP/2.0 200 "), "{answer}");

    // Half a message, then silence: closed after tcp_partial_timeout.
    let mut stall = TcpStream::connect(server.sip).unwrap();
    stall
        .write_all(
            b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKs\r\n",
        )
        .unwrap();
    assert!(closed_by_server(&mut stall, Duration::from_secs(10)));
    server.wait_metric("switchboard_tcp_stalled_total", 1.0);

    // A message without Content-Length cannot be framed on a stream: closed.
    let mut garbage = TcpStream::connect(server.sip).unwrap();
    let no_length = options("t2", "OPTIONS", port).replace("Content-Length: 0\r\n", "");
    garbage.write_all(no_length.as_bytes()).unwrap();
    assert!(closed_by_server(&mut garbage, Duration::from_secs(10)));

    // The first connection is still served.
    good.write_all(
        options("t3", "OPTIONS", port)
            .replace("UDP", "TCP")
            .as_bytes(),
    )
    .unwrap();
    let n = good.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200 "));
}
