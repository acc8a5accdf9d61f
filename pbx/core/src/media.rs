//! What the engine tells the runtime about a call's media, and what it hears back. The
//! engine decides ports and codecs (from SDP offer/answer); the runtime binds the ports and
//! runs the call's `MediaSession`.

use std::time::Duration;

use switchboard_media::relay::{Leg, LegConfig, MediaEvent, SessionConfig};

use crate::ports::PortPair;

/// Media anchoring settings.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// The address written in SDP `c=` lines (the public one behind NAT).
    pub advertise: String,
    /// First and last RTP port (inclusive).
    pub port_range: (u16, u16),
    /// A call whose RTP stops for this long is hung up.
    pub rtp_timeout: Duration,
}

/// A command for the runtime's media side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaCommand {
    /// Bind the two port pairs (toward the caller, toward the callee) and start relaying.
    Open {
        call: u64,
        a: PortPair,
        b: PortPair,
        config: SessionConfig,
    },
    /// The offer/answer on one leg settled (or changed: re-INVITE, UPDATE).
    Configure {
        call: u64,
        leg: Leg,
        config: LegConfig,
    },
    /// The call is over: close its sockets.
    Close { call: u64 },
}

impl MediaCommand {
    pub fn call(&self) -> u64 {
        match self {
            MediaCommand::Open { call, .. }
            | MediaCommand::Configure { call, .. }
            | MediaCommand::Close { call } => *call,
        }
    }

    pub fn leg_config(self) -> Option<(Leg, LegConfig)> {
        match self {
            MediaCommand::Configure { leg, config, .. } => Some((leg, config)),
            _ => None,
        }
    }
}

/// What the runtime's media side reports to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaNotice {
    /// A port of the pair could not be bound (another program holds it).
    BindFailed { pair: PortPair },
    Session(MediaEvent),
}
