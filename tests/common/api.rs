//! A client for the call-control API: HTTP/1.0 requests with a method, a bearer token and
//! a JSON body over a plain TCP stream (enough for axum), JSON parsed with serde_json, and
//! the WebSocket event stream through `tungstenite` with a read deadline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

/// An API answer: the status and the body parsed as JSON (`Value::Null` when it is not).
#[derive(Debug)]
pub struct ApiResponse {
    pub status: u16,
    pub text: String,
    pub json: Value,
}

impl ApiResponse {
    /// The `reason` of an error body.
    pub fn reason(&self) -> &str {
        self.json["reason"].as_str().unwrap_or("")
    }
}

pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> ApiResponse {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect to http://{addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or("");
    head.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    ));
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()))
        .unwrap_or_else(|e| panic!("send {method} {path}: {e}"));
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("read the answer to {method} {path}: {e}"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in the answer to {method} {path}: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    let json = serde_json::from_str(&body).unwrap_or(Value::Null);
    ApiResponse {
        status,
        text: body,
        json,
    }
}

/// The API of one server with one token.
pub struct Api {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

impl Api {
    pub fn new(addr: SocketAddr, token: &str) -> Api {
        Api {
            addr,
            token: Some(token.to_string()),
        }
    }

    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> ApiResponse {
        request(
            self.addr,
            method,
            &format!("/api/v1{path}"),
            self.token.as_deref(),
            body,
        )
    }

    pub fn get(&self, path: &str) -> ApiResponse {
        self.call("GET", path, None)
    }

    /// Like [`Api::call`], panicking unless the status is `expect`.
    pub fn expect(&self, expect: u16, method: &str, path: &str, body: Option<&str>) -> Value {
        let r = self.call(method, path, body);
        assert_eq!(
            r.status, expect,
            "{method} /api/v1{path} {body:?}: wanted {expect}, got {} {}",
            r.status, r.text
        );
        r.json
    }

    /// The live calls (`GET /calls`).
    pub fn calls(&self) -> Vec<Value> {
        let v = self.expect(200, "GET", "/calls", None);
        v["calls"].as_array().cloned().unwrap_or_default()
    }

    /// The event stream, subscribed.
    pub fn events(&self) -> EventStream {
        use tungstenite::client::IntoClientRequest;
        let url = format!("ws://{}/api/v1/events", self.addr);
        let mut req = url.into_client_request().expect("ws request");
        if let Some(token) = &self.token {
            req.headers_mut().insert(
                "Authorization",
                format!("Bearer {token}").parse().expect("header"),
            );
        }
        let stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("connect for the event stream: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        let (socket, response) = tungstenite::client::client(req, stream)
            .unwrap_or_else(|e| panic!("ws handshake: {e}"));
        assert_eq!(response.status().as_u16(), 101);
        EventStream {
            socket,
            seen: Vec::new(),
        }
    }
}

pub struct EventStream {
    socket: tungstenite::WebSocket<TcpStream>,
    /// Every event received so far, in order.
    pub seen: Vec<Value>,
}

impl EventStream {
    /// Reads events until one satisfies `matches`, or panics after `timeout` with what came.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        what: &str,
        matches: impl Fn(&Value) -> bool,
    ) -> Value {
        if let Some(v) = self.seen.iter().find(|v| matches(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.socket.read() {
                Ok(tungstenite::Message::Text(text)) => {
                    let v: Value = serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("event is not JSON ({e}): {text}"));
                    self.seen.push(v.clone());
                    if matches(&v) {
                        return v;
                    }
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!(
                    "event stream failed waiting for {what}: {e}; seen {:?}",
                    self.seen
                ),
            }
        }
        panic!("no {what} event within {timeout:?}; seen {:?}", self.seen)
    }
}
