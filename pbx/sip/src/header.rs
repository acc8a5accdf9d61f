//! Typed views of the header values Switchboard acts on: Via, name-addr headers (From, To,
//! Contact, Route, Record-Route, Path), CSeq. Each has `parse(&str)` and `Display`, and
//! printing what was parsed gives back an equivalent value.

use std::fmt;

use crate::message::Method;
use crate::uri::{find_param, set_param, write_params, Param, Uri};
use crate::SipError;

/// One Via value (RFC 3261 §20.42): `SIP/2.0/UDP host[:port];params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Upper-cased transport token (`UDP`, `TCP`, `TLS`, `WS`, or an unknown token).
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: Vec<Param>,
}

impl Via {
    pub fn parse(s: &str) -> Result<Via, SipError> {
        crate::parse::parse_via(s)
    }

    pub fn new(transport: &str, host: &str, port: Option<u16>, branch: &str) -> Via {
        Via {
            transport: transport.to_ascii_uppercase(),
            host: host.to_string(),
            port,
            params: vec![Param::new("branch", Some(branch))],
        }
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }

    pub fn set_param(&mut self, name: &str, value: Option<&str>) {
        set_param(&mut self.params, name, value)
    }

    pub fn branch(&self) -> Option<&str> {
        self.param("branch").flatten()
    }

    pub fn received(&self) -> Option<&str> {
        self.param("received").flatten()
    }

    /// `None`: no rport; `Some(None)`: rport asked for (RFC 3581); `Some(Some(p))`: filled.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.param("rport")
            .map(|v| v.and_then(|p| p.parse::<u16>().ok()))
    }

    /// True when the branch carries the RFC 3261 magic cookie `z9hG4bK`.
    pub fn is_rfc3261(&self) -> bool {
        self.branch().is_some_and(|b| b.starts_with("z9hG4bK"))
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write_params(f, &self.params)
    }
}

/// A name-addr or addr-spec with header parameters (From, To, Contact, Route,
/// Record-Route, Path, Refer-To). Always printed in the `<uri>` form, which is what makes
/// URI parameters and header parameters unambiguous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name as written, quotes included when it was quoted.
    pub display_name: Option<String>,
    pub uri: Uri,
    pub params: Vec<Param>,
}

impl NameAddr {
    pub fn parse(s: &str) -> Result<NameAddr, SipError> {
        crate::parse::parse_name_addr(s)
    }

    pub fn new(uri: Uri) -> NameAddr {
        NameAddr {
            display_name: None,
            uri,
            params: Vec::new(),
        }
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }

    pub fn set_param(&mut self, name: &str, value: Option<&str>) {
        set_param(&mut self.params, name, value)
    }

    pub fn tag(&self) -> Option<&str> {
        self.param("tag").flatten()
    }

    /// The `expires` header parameter of a Contact.
    pub fn expires(&self) -> Option<u32> {
        self.param("expires").flatten().and_then(|v| v.parse().ok())
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display_name {
            write!(f, "{d} ")?;
        }
        write!(f, "<{}>", self.uri)?;
        write_params(f, &self.params)
    }
}

/// CSeq (RFC 3261 §20.16): a 32-bit sequence number and the method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(s: &str) -> Result<CSeq, SipError> {
        crate::parse::parse_cseq(s)
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_rfc3261_examples() {
        // RFC 3261 §20.42.
        let v = Via::parse("SIP/2.0/UDP erlang.bell-telephone.com:5060;branch=z9hG4bK87asdks7")
            .unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "erlang.bell-telephone.com");
        assert_eq!(v.port, Some(5060));
        assert_eq!(v.branch(), Some("z9hG4bK87asdks7"));
        assert!(v.is_rfc3261());
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP erlang.bell-telephone.com:5060;branch=z9hG4bK87asdks7"
        );

        let v = Via::parse("SIP/2.0/UDP 192.0.2.1:5060 ;received=192.0.2.207;branch=z9hG4bK77asjd")
            .unwrap();
        assert_eq!(v.received(), Some("192.0.2.207"));
        assert_eq!(v.branch(), Some("z9hG4bK77asjd"));

        // LWS around `/`, `:`, `;` and `=` (RFC 3261 §20.42's third example, compact form).
        let v = Via::parse(
            "SIP / 2.0 / UDP first.example.com: 4000;ttl=16 ;maddr=224.2.0.1 ;branch=z9hG4bKa7c6a8dlze.1",
        )
        .unwrap();
        assert_eq!((v.host.as_str(), v.port), ("first.example.com", Some(4000)));
        assert_eq!(v.param("maddr"), Some(Some("224.2.0.1")));
        assert_eq!(
            Via::parse(&v.to_string()).unwrap(),
            v,
            "printing normalises the spacing only"
        );

        let v = Via::parse("SIP/2.0/tcp [2001:db8::9]:5061;rport;branch=z9hG4bKx").unwrap();
        assert_eq!(v.transport, "TCP");
        assert_eq!(v.host, "[2001:db8::9]");
        assert_eq!(v.rport(), Some(None));
    }

    #[test]
    fn via_builds_and_prints() {
        let mut v = Via::new("udp", "pc33.atlanta.com", None, "z9hG4bK776asdhds");
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds"
        );
        v.set_param("received", Some("192.0.2.101"));
        v.set_param("rport", Some("5062"));
        assert_eq!(v.rport(), Some(Some(5062)));
        assert_eq!(Via::parse(&v.to_string()).unwrap(), v);
    }

    #[test]
    fn malformed_vias_are_refused() {
        for text in [
            "",
            "SIP/2.0/UDP",
            "SIP/2.0 host.example.com",
            "SIP/3.0/UDP host.example.com",
            "HTTP/2.0/UDP host.example.com",
            "SIP/2.0/UDPhost.example.com",
            "SIP/2.0/UDP host.example.com;;",
            "SIP/2.0/UDP 192.0.2.15;;,;,,",
            "SIP/2.0/UDP host.example.com:99999",
            "SIP/2.0/UDP host.example.com;branch=",
            "SIP/2.0/UDP host.example.com junk",
        ] {
            assert!(Via::parse(text).is_err(), "{text:?} should be refused");
        }
    }

    #[test]
    fn name_addr_rfc3261_examples() {
        // RFC 3261 §20.20 and §20.39.
        let f = NameAddr::parse(r#""A. G. Bell" <sip:agb@bell-telephone.com> ;tag=a48s"#).unwrap();
        assert_eq!(f.display_name.as_deref(), Some(r#""A. G. Bell""#));
        assert_eq!(f.uri.user.as_deref(), Some("agb"));
        assert_eq!(f.tag(), Some("a48s"));
        assert_eq!(
            f.to_string(),
            r#""A. G. Bell" <sip:agb@bell-telephone.com>;tag=a48s"#
        );

        // Bare addr-spec: the `;tag` is a header parameter (RFC 3261 §20.10).
        let f = NameAddr::parse("sip:+12125551212@server.phone2net.com;tag=887s").unwrap();
        assert_eq!(f.display_name, None);
        assert!(f.uri.params.is_empty());
        assert_eq!(f.tag(), Some("887s"));
        assert_eq!(
            f.to_string(),
            "<sip:+12125551212@server.phone2net.com>;tag=887s"
        );

        let t = NameAddr::parse("The Operator <sip:operator@cs.columbia.edu>;tag=287447").unwrap();
        assert_eq!(t.display_name.as_deref(), Some("The Operator"));
        assert_eq!(t.tag(), Some("287447"));

        let c = NameAddr::parse(
            r#""Mr. Watson" <sip:watson@worcester.bell-telephone.com>;q=0.7; expires=3600"#,
        )
        .unwrap();
        assert_eq!(c.param("q"), Some(Some("0.7")));
        assert_eq!(c.expires(), Some(3600));

        let c = NameAddr::parse("<sip:+1972@gw1.example.net;unknownparam>").unwrap();
        assert_eq!(c.uri.param("unknownparam"), Some(None));
        assert!(c.params.is_empty());

        // No space between the display name and `<` (RFC 4475 §3.1.1.6).
        let n = NameAddr::parse("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(n.display_name.as_deref(), Some("caller"));

        // Escapes in a quoted display name and quoted parameter values survive printing.
        let q = NameAddr::parse(r#""J Rosenberg \\\"" <sip:jdrosen@example.com>;x="a;b""#).unwrap();
        assert_eq!(q.display_name.as_deref(), Some(r#""J Rosenberg \\\"""#));
        assert_eq!(q.param("x"), Some(Some(r#""a;b""#)));
        assert_eq!(NameAddr::parse(&q.to_string()).unwrap(), q);

        // Other schemes are kept opaque.
        let o = NameAddr::parse("isbn:2983792873;tag=1").unwrap();
        assert_eq!(o.uri.host, "2983792873");
        assert_eq!(o.tag(), Some("1"));
    }

    #[test]
    fn name_addr_builds_and_prints() {
        let mut na = NameAddr::new(crate::Uri::sip(Some("bob"), "biloxi.com", None));
        na.set_param("tag", Some("a6c85cf"));
        assert_eq!(na.to_string(), "<sip:bob@biloxi.com>;tag=a6c85cf");
        assert_eq!(NameAddr::parse(&na.to_string()).unwrap(), na);
    }

    #[test]
    fn malformed_name_addrs_are_refused() {
        for text in [
            "",
            r#""Mr. J. User <sip:j.user@example.com>"#, // RFC 4475 §3.1.2.6
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43", // §3.1.2.15
            r#""Watson, Thomas" < sip:t.watson@example.org >"#, // §3.1.2.14
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E", // §3.1.2.13
            "sip:a@example.com,sip:b@example.com",
            "<sip:joe@example.org>;;;;",
            "<sip:joe@example.org",
            "<sip:joe@example.org> junk",
            "\"display\" sip:joe@example.org",
            "<sip:joe@example.org>;tag",
        ] {
            let result = NameAddr::parse(text);
            if text.ends_with(";tag") {
                assert!(result.is_ok(), "a flag parameter is fine");
            } else {
                assert!(result.is_err(), "{text:?} should be refused");
            }
        }
    }

    #[test]
    fn cseq_parse_and_print() {
        let c = CSeq::parse("4711 INVITE").unwrap();
        assert_eq!((c.seq, &c.method), (4711, &Method::Invite));
        assert_eq!(c.to_string(), "4711 INVITE");
        assert_eq!(CSeq::parse("0009\t INVITE").unwrap().seq, 9);
        assert_eq!(CSeq::parse("2147483647 ACK").unwrap().seq, 2147483647);
        let other = CSeq::parse("1 NEWMETHOD").unwrap();
        assert_eq!(other.method, Method::Other("NEWMETHOD".into()));
        for bad in [
            "",
            "INVITE",
            "1INVITE",
            "1 ",
            "-1 INVITE",
            "2147483648 INVITE", // RFC 3261 §8.1.1.5: below 2^31
            "36893488147419103232 REGISTER",
            "1 INV ITE",
        ] {
            assert!(CSeq::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
