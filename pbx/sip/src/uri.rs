//! SIP and other URIs (RFC 3261 §19.1, §25.1). SIP/SIPS URIs are parsed into parts;
//! other schemes (tel, im, unknown ones) keep their scheme-specific part opaque in `host`
//! so a message carrying them still parses and can be answered (416 for a Request-URI).

use std::fmt;

use crate::SipError;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
    Other(String),
}

impl Scheme {
    pub fn as_str(&self) -> &str {
        match self {
            Scheme::Sip => "sip",
            Scheme::Sips => "sips",
            Scheme::Tel => "tel",
            Scheme::Other(s) => s,
        }
    }
}

/// A `;name[=value]` parameter of a URI or header. Names compare case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub value: Option<String>,
}

impl Param {
    pub fn new(name: impl Into<String>, value: Option<&str>) -> Param {
        Param {
            name: name.into(),
            value: value.map(str::to_string),
        }
    }
}

/// Looks a parameter up by name: `None` if absent, `Some(None)` for a flag parameter.
pub fn find_param<'a>(params: &'a [Param], name: &str) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name))
        .map(|p| p.value.as_deref())
}

/// Sets (replacing) a parameter.
pub fn set_param(params: &mut Vec<Param>, name: &str, value: Option<&str>) {
    match params
        .iter_mut()
        .find(|p| p.name.eq_ignore_ascii_case(name))
    {
        Some(p) => p.value = value.map(str::to_string),
        None => params.push(Param::new(name, value)),
    }
}

pub(crate) fn write_params(f: &mut fmt::Formatter<'_>, params: &[Param]) -> fmt::Result {
    for p in params {
        write!(f, ";{}", p.name)?;
        if let Some(v) = &p.value {
            write!(f, "={v}")?;
        }
    }
    Ok(())
}

/// A URI. For `sip:`/`sips:` every field is meaningful; `user` and `password` are kept
/// %-escaped as received (compare with [`Uri::user_unescaped`]). `host` keeps IPv6
/// references in brackets. For any other scheme, `host` holds the whole scheme-specific
/// part and the other fields are empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    pub scheme: Scheme,
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    pub params: Vec<Param>,
    /// The raw `?hname=hvalue&…` part, without the `?`.
    pub headers: Option<String>,
}

impl Uri {
    /// `sip:user@host[:port]`.
    pub fn sip(user: Option<&str>, host: &str, port: Option<u16>) -> Uri {
        Uri {
            scheme: Scheme::Sip,
            user: user.map(str::to_string),
            password: None,
            host: host.to_string(),
            port,
            params: Vec::new(),
            headers: None,
        }
    }

    pub fn parse(s: &str) -> Result<Uri, SipError> {
        crate::parse::parse_uri(s)
    }

    pub fn is_sip(&self) -> bool {
        matches!(self.scheme, Scheme::Sip | Scheme::Sips)
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }

    /// The user part with %-escapes decoded (lossy for invalid UTF-8).
    pub fn user_unescaped(&self) -> Option<String> {
        self.user.as_deref().map(crate::parse::unescape)
    }

    /// `host[:port]`.
    pub fn host_port(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{}", self.host, p),
            None => self.host.clone(),
        }
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.scheme.as_str())?;
        if !self.is_sip() {
            f.write_str(&self.host)?;
            return write_params(f, &self.params);
        }
        if let Some(u) = &self.user {
            f.write_str(u)?;
            if let Some(p) = &self.password {
                write!(f, ":{p}")?;
            }
            f.write_str("@")?;
        }
        f.write_str(&self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write_params(f, &self.params)?;
        if let Some(h) = &self.headers {
            write!(f, "?{h}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples of RFC 3261 §19.1.3 parse and print back unchanged.
    #[test]
    fn rfc3261_examples_round_trip() {
        for text in [
            "sip:alice@atlanta.com",
            "sip:alice:secretword@atlanta.com;transport=tcp",
            "sips:alice@atlanta.com?subject=project%20x&priority=urgent",
            "sip:+1-212-555-1212:1234@gateway.com;user=phone",
            "sips:1212@gateway.com",
            "sip:alice@192.0.2.4",
            "sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
            "sip:alice;day=tuesday@atlanta.com",
            "sip:[2001:db8::10]:5070;transport=tcp;lr",
            "tel:+1-201-555-0123;phone-context=example.com",
            "soap.beep://192.0.2.103:3002",
        ] {
            let uri = Uri::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(uri.to_string(), text);
        }
    }

    #[test]
    fn parts_are_split_as_rfc3261_says() {
        let uri = Uri::parse("sip:alice:secretword@atlanta.com:5061;transport=tcp").unwrap();
        assert_eq!(uri.scheme, Scheme::Sip);
        assert_eq!(uri.user.as_deref(), Some("alice"));
        assert_eq!(uri.password.as_deref(), Some("secretword"));
        assert_eq!(uri.host, "atlanta.com");
        assert_eq!(uri.port, Some(5061));
        assert_eq!(uri.param("TRANSPORT"), Some(Some("tcp")));
        assert_eq!(uri.host_port(), "atlanta.com:5061");

        let uri = Uri::parse("sips:alice@atlanta.com?subject=project%20x&priority=urgent").unwrap();
        assert_eq!(uri.scheme, Scheme::Sips);
        assert_eq!(
            uri.headers.as_deref(),
            Some("subject=project%20x&priority=urgent")
        );

        // The user part keeps `;` as received (RFC 4475 §3.1.1.9) and its escapes.
        let uri = Uri::parse("sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(uri.user.as_deref(), Some("user;par=u%40example.net"));
        assert_eq!(
            uri.user_unescaped().as_deref(),
            Some("user;par=u@example.net")
        );
        assert!(uri.params.is_empty());

        let uri = Uri::parse("sip:[::1]").unwrap();
        assert_eq!((uri.host.as_str(), uri.port), ("[::1]", None));

        let tel = Uri::parse("TEL:+1-201-555-0123").unwrap();
        assert_eq!(tel.scheme, Scheme::Tel);
        assert_eq!(tel.host, "+1-201-555-0123");
        assert!(!tel.is_sip());
    }

    #[test]
    fn malformed_uris_are_refused() {
        for text in [
            "",
            "sip:",
            "sip:@atlanta.com",
            "sip:alice@",
            "sip:alice@atlanta.com:",
            "sip:alice@atlanta.com:99999",
            "sip:alice@atlanta.com:50a",
            "sip:al ice@atlanta.com",
            "<sip:alice@atlanta.com>",
            "sip:alice@atlanta.com;",
            "sip:alice@atlanta.com;=x",
            "sip:alice@atlanta.com;lr=",
            "sip:alice@atlanta.com?",
            "sip:alice@atlanta.com?noequals",
            "sip:al%4@atlanta.com",
            "sip:alice@[::1",
            "sip:alice@[zz]",
            "sip:alice@atlanta.com junk",
            "1sip:alice@atlanta.com",
            "nocolon",
            "tel:",
            "x:a b",
        ] {
            assert!(Uri::parse(text).is_err(), "{text:?} should be refused");
        }
    }

    #[test]
    fn built_uris_print() {
        assert_eq!(
            Uri::sip(Some("alice"), "atlanta.com", Some(5060)).to_string(),
            "sip:alice@atlanta.com:5060"
        );
        let mut uri = Uri::sip(None, "proxy.example.com", None);
        set_param(&mut uri.params, "lr", None);
        set_param(&mut uri.params, "transport", Some("tcp"));
        set_param(&mut uri.params, "transport", Some("tls"));
        assert_eq!(uri.to_string(), "sip:proxy.example.com;lr;transport=tls");
        assert_eq!(Uri::parse(&uri.to_string()).unwrap(), uri);
    }
}
