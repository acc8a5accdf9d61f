//! PLACEHOLDER — being written (parser helper). Signatures are fixed; bodies are not.
use crate::header::{CSeq, NameAddr, Via};
use crate::message::{Message, Response};
use crate::uri::Uri;
use crate::SipError;

#[derive(Debug, thiserror::Error)]
#[error("unparsed")]
pub struct ParseError;
impl ParseError {
    pub fn response(&self) -> Option<Response> { None }
}
pub enum StreamItem { Message(Message, usize), KeepAlive(usize), Incomplete }
pub fn parse_datagram(_buf: &[u8]) -> Result<Message, ParseError> { Err(ParseError) }
pub fn parse_stream(_buf: &[u8], _max: usize) -> Result<StreamItem, ParseError> { Err(ParseError) }
pub fn parse_uri(_s: &str) -> Result<Uri, SipError> { Err(SipError::BadUri("unparsed")) }
pub fn parse_via(_s: &str) -> Result<Via, SipError> { Err(SipError::BadHeader("Via")) }
pub fn parse_name_addr(_s: &str) -> Result<NameAddr, SipError> { Err(SipError::BadHeader("name-addr")) }
pub fn parse_cseq(_s: &str) -> Result<CSeq, SipError> { Err(SipError::BadHeader("CSeq")) }
pub fn unescape(s: &str) -> String { s.to_string() }
