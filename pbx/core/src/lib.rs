//! Switchboard's call-control core: the registrar, digest authentication and the B2BUA,
//! composed in one [`Engine`] that is a pure state machine (see `engine` for the drive
//! contract). It owns no socket, task or clock; `switchboard-runtime` drives it.
#![forbid(unsafe_code)]

pub mod auth;
pub mod call;
pub mod command;
pub mod conference;
pub mod dialog;
pub mod directory;
mod engine;
pub mod feature_code;
pub mod features;
mod ivr;
pub mod media;
pub mod plan;
pub mod ports;
pub mod registrar;
pub mod say;
pub mod target;
pub mod trunk;

pub use call::CallOutcome;
pub use command::{Command, CommandError, CommandReply, Party};
pub use dialog::LocalAddress;
pub use directory::{Directory, DirectoryUser};
pub use engine::{
    CallDirection, CallHistory, Engine, EngineConfig, EngineEvent, Stats, TransferKind, ALLOW,
    SUPPORTED,
};
pub use features::{AutoAnswerProfile, FeatureConfig};
pub use plan::{CallAction, MenuSpec};
pub use registrar::{Binding, BindingChange, RegistrarConfig};
pub use trunk::{RouteDecision, RouteQuery, Router, TrunkConfig, TrunkStatus};

use rand::Rng;

/// A random tag (RFC 3261 §19.3: at least 32 bits of randomness).
pub fn new_tag() -> String {
    let v: u64 = rand::thread_rng().gen();
    format!("{v:016x}")
}

/// A globally unique Call-ID for a leg we originate (§8.1.1.4).
pub fn new_sip_call_id(host: &str) -> String {
    let v: u128 = rand::thread_rng().gen();
    format!("{v:032x}@{host}")
}
