//! Text form of a transport target (`udp:192.0.2.1:5060`, `tcp:[2001:db8::1]:5070`), used
//! to persist the flow a binding was registered from.

use std::net::SocketAddr;

use switchboard_sip::transaction::{Target, Transport};

pub fn format_target(t: Target) -> String {
    let proto = match t.transport {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
    };
    format!("{proto}:{}", t.addr)
}

pub fn parse_target(s: &str) -> Option<Target> {
    let (proto, addr) = s.split_once(':')?;
    let transport = match proto {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        _ => return None,
    };
    let addr: SocketAddr = addr.parse().ok()?;
    Some(Target { transport, addr })
}

/// The Via/URI transport token for a target.
pub fn transport_token(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for s in ["udp:127.0.0.1:5060", "tcp:[::1]:5070"] {
            let t = parse_target(s).unwrap();
            assert_eq!(format_target(t), s);
        }
        assert!(parse_target("sctp:1.2.3.4:5").is_none());
        assert!(parse_target("udp:nothost").is_none());
    }
}
