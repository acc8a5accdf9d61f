//! The semantic checks a UAS, registrar or B2BUA applies to a parsed request before acting
//! on it (RFC 3261 §8.2.1–§8.2.2, RFC 4475 §3.3). The parser (`crate::parse`) owns syntax;
//! this module owns "well-formed but not acceptable": missing or duplicated headers, a
//! CSeq for another method, a scheme we do not serve, extensions we lack. It answers with
//! a [`Rejection`] and never touches transaction or dialog state.
//!
//! What is deliberately NOT here: Content-Type / Accept negotiation (415, the application
//! decides), authentication (401/407), and the Max-Forwards decrement, which only an
//! element that forwards performs ([`check_max_forwards`]).

use crate::message::{HeaderName, Method, Request, Response};
use crate::uri::Scheme;

/// The answer to send instead of processing a request: a status, a reason phrase naming
/// the problem, and headers to add (an `Unsupported` list for 420).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(crate::HeaderName, String)>,
}

impl Rejection {
    pub fn new(status: u16, reason: impl Into<String>) -> Rejection {
        Rejection {
            status,
            reason: reason.into(),
            headers: Vec::new(),
        }
    }

    /// Builds the response to `req` (RFC 3261 §8.2.6) carrying this rejection.
    pub fn to_response(&self, req: &Request, to_tag: Option<&str>) -> Response {
        let mut resp = Response::for_request(req, self.status, &self.reason, to_tag);
        for (name, value) in &self.headers {
            resp.headers.push(name.clone(), value.clone());
        }
        resp
    }
}

/// Headers every request must carry (RFC 3261 §8.1.1). Max-Forwards is not among them:
/// RFC 3261 §8.2 gives a UAS no rule to refuse its absence and §16.3 step 3 says a proxy
/// treats a missing Max-Forwards as passing the check, and RFC 2543 clients (RFC 4475
/// §3.4.1) omit it.
const REQUIRED: [(HeaderName, &str); 5] = [
    (HeaderName::To, "To"),
    (HeaderName::From, "From"),
    (HeaderName::CallId, "Call-ID"),
    (HeaderName::CSeq, "CSeq"),
    (HeaderName::Via, "Via"),
];

/// Headers whose grammar allows one value only (RFC 3261 §20; RFC 4475 §3.3.8–9).
const SINGLE: [(HeaderName, &str); 7] = [
    (HeaderName::To, "To"),
    (HeaderName::From, "From"),
    (HeaderName::CallId, "Call-ID"),
    (HeaderName::CSeq, "CSeq"),
    (HeaderName::MaxForwards, "Max-Forwards"),
    (HeaderName::ContentLength, "Content-Length"),
    (HeaderName::ContentType, "Content-Type"),
];

/// Checks a request a UAS (or the UAS half of a B2BUA, or a registrar) is about to handle.
/// `supported` lists the option tags we implement; any other tag in `Require` earns a 420
/// with an `Unsupported` header (RFC 3261 §8.2.2.3).
///
/// Order follows RFC 3261 §8.2: headers first (400), then the Request-URI scheme (416),
/// then extensions (420). Max-Forwards is checked only for syntax here: call
/// [`check_max_forwards`] when the request is about to be forwarded (RFC 4475 §3.3.11).
pub fn check_request(req: &Request, supported: &[&str]) -> Result<(), Rejection> {
    let missing: Vec<&str> = REQUIRED
        .iter()
        .filter(|(name, _)| req.headers.get(name).is_none())
        .map(|(_, label)| *label)
        .collect();
    if !missing.is_empty() {
        let noun = if missing.len() == 1 {
            "Header"
        } else {
            "Headers"
        };
        return Err(Rejection::new(
            400,
            format!("Missing {} {noun}", missing.join(", ")),
        ));
    }
    for (name, label) in &SINGLE {
        if req.headers.count(name) > 1 {
            return Err(Rejection::new(400, format!("Multiple {label} Headers")));
        }
    }

    // The parser already refused malformed values; these guard requests built in code.
    req.to().map_err(|_| Rejection::new(400, "Bad To Header"))?;
    req.from()
        .map_err(|_| Rejection::new(400, "Bad From Header"))?;
    req.top_via()
        .map_err(|_| Rejection::new(400, "Bad Via Header"))?;
    let cseq = req
        .cseq()
        .map_err(|_| Rejection::new(400, "Bad CSeq Header"))?;
    req.max_forwards()
        .map_err(|_| Rejection::new(400, "Bad Max-Forwards Header"))?;

    // The CSeq method is the request's own, for ACK and CANCEL too (RFC 3261 §8.1.1.5,
    // §9.1, §17.1.1.3); only their sequence numbers relate to the INVITE's.
    if cseq.method != req.method {
        return Err(Rejection::new(400, "CSeq Method Mismatch"));
    }

    // RFC 3261 §8.2.2.1. Only sip/sips are served: tel and others are refused until a
    // router that resolves them exists (RFC 4475 §3.3.2–3).
    if !matches!(req.uri.scheme, Scheme::Sip | Scheme::Sips) {
        return Err(Rejection::new(416, "Unsupported URI Scheme"));
    }

    // Require is not used in CANCEL nor in an ACK (RFC 3261 §8.2.2.3, §9.1), and neither
    // can be answered with a 420.
    if !matches!(req.method, Method::Ack | Method::Cancel) {
        extension_check(req, &HeaderName::Require, supported)?;
    }
    Ok(())
}

/// The proxy-side counterpart of the Require check (RFC 3261 §16.3 step 5): a request
/// this element forwards must not carry a `Proxy-Require` tag missing from `supported`.
pub fn check_proxy_require(req: &Request, supported: &[&str]) -> Result<(), Rejection> {
    if matches!(req.method, Method::Ack | Method::Cancel) {
        return Ok(());
    }
    extension_check(req, &HeaderName::ProxyRequire, supported)
}

fn extension_check(
    req: &Request,
    header: &HeaderName,
    supported: &[&str],
) -> Result<(), Rejection> {
    // Values are already split one tag per header by the parser; split again in case the
    // request was built in code with a comma list.
    let mut unsupported: Vec<&str> = Vec::new();
    for value in req.headers.get_all(header) {
        for tag in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            // Option tags are tokens compared as written (RFC 3261 §19.2).
            if !supported.contains(&tag) && !unsupported.contains(&tag) {
                unsupported.push(tag);
            }
        }
    }
    if unsupported.is_empty() {
        return Ok(());
    }
    let mut rejection = Rejection::new(420, "Bad Extension");
    for tag in unsupported {
        rejection
            .headers
            .push((HeaderName::Unsupported, tag.to_string()));
    }
    Err(rejection)
}

/// The Max-Forwards check of an element about to forward a request (RFC 3261 §16.3 step
/// 3, RFC 4475 §3.3.11): zero → 483, malformed → 400, absent → fine. An OPTIONS at zero
/// may instead be answered locally (RFC 3261 §16.3); that choice is the caller's.
pub fn check_max_forwards(req: &Request) -> Result<(), Rejection> {
    match req.max_forwards() {
        Err(_) => Err(Rejection::new(400, "Bad Max-Forwards Header")),
        Ok(Some(0)) => Err(Rejection::new(483, "Too Many Hops")),
        Ok(_) => Ok(()),
    }
}
