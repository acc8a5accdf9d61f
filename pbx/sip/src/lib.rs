//! SIP protocol logic for Switchboard, without I/O or clocks (see `../shared/STYLE.md`).
//!
//! - [`message`], [`uri`], [`header`], [`parse`]: the RFC 3261 message model, its typed
//!   header views, the wire parser (datagram and stream framing) and printer.
//! - [`transaction`]: RFC 3261 §17 client and server transaction state machines.
//! - [`digest`]: RFC 7616/8760 digest authentication (MD5 and SHA-256), nonces.
//!
//! Nothing here opens a socket, spawns a task or reads the clock: callers pass `now`.
#![forbid(unsafe_code)]

pub mod check;
pub mod digest;
pub mod header;
pub mod message;
pub mod parse;
pub mod transaction;
pub mod uri;

pub use header::{CSeq, NameAddr, Via};
pub use message::{Header, HeaderName, Headers, Message, Method, Request, Response};
pub use parse::{parse_datagram, parse_stream, ParseError, StreamItem};
pub use uri::{Param, Scheme, Uri};

/// Errors about the content of a message that was framed correctly: a header that is
/// missing or does not follow its grammar. Each maps to the status to answer a request with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SipError {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("malformed {0} header")]
    BadHeader(&'static str),
    #[error("malformed URI: {0}")]
    BadUri(&'static str),
}

impl SipError {
    /// The status a UAS answers a request with when it meets this error.
    pub fn status(&self) -> u16 {
        400
    }
}
