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
