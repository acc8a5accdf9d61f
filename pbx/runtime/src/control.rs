//! Call control from outside the engine task (the HTTP API): a cloneable [`CallControl`]
//! sends a [`Command`] to the engine task over a bounded queue and awaits the reply; the
//! engine task carries it out between two other inputs and drains as after any input.
//! It also hands out subscriptions to the public event stream.
//!
//! The queue is its own, not the SIP input queue: a burst of API requests must neither
//! take slots SIP messages need nor wait behind them. A full queue is an answer (busy,
//! 503), never a wait.

use switchboard_core::{Command, CommandError, CommandReply};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::events::CallEvent;

/// Commands waiting for the engine task before callers are told it is busy.
pub const COMMAND_QUEUE: usize = 256;
/// Events a WebSocket subscriber may fall behind by before it loses the oldest.
pub const EVENT_BUFFER: usize = 1024;

/// One command and where its reply goes.
pub(crate) struct CommandRequest {
    pub(crate) command: Command,
    pub(crate) reply: oneshot::Sender<Result<CommandReply, CommandError>>,
}

/// Why a command got no reply from the engine, or the engine's refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The engine refused the command (its status is the command error's).
    #[error(transparent)]
    Command(#[from] CommandError),
    /// [503] The command queue is full.
    #[error("the call engine is busy: {COMMAND_QUEUE} commands are waiting; retry shortly")]
    Busy,
    /// [503] The engine task is not running (starting or stopped).
    #[error("the call engine is not running")]
    Stopped,
}

impl ControlError {
    pub fn http_status(&self) -> u16 {
        match self {
            ControlError::Command(e) => e.http_status(),
            ControlError::Busy | ControlError::Stopped => 503,
        }
    }
}

/// A handle on the engine task for commands and events; cheap to clone.
#[derive(Clone)]
pub struct CallControl {
    commands: mpsc::Sender<CommandRequest>,
    events: broadcast::Sender<CallEvent>,
}

/// The engine task's end of [`CallControl`]: give it to [`crate::run`].
pub struct ControlInbox {
    pub(crate) commands: mpsc::Receiver<CommandRequest>,
    pub(crate) events: broadcast::Sender<CallEvent>,
}

impl CallControl {
    /// A handle and the inbox for [`crate::run`], with the default queue sizes.
    pub fn new() -> (CallControl, ControlInbox) {
        CallControl::with_capacity(COMMAND_QUEUE, EVENT_BUFFER)
    }

    pub fn with_capacity(commands: usize, events: usize) -> (CallControl, ControlInbox) {
        let (command_tx, command_rx) = mpsc::channel(commands.max(1));
        let (event_tx, _) = broadcast::channel(events.max(1));
        (
            CallControl {
                commands: command_tx,
                events: event_tx.clone(),
            },
            ControlInbox {
                commands: command_rx,
                events: event_tx,
            },
        )
    }

    /// Has the engine carry out `command` and returns its reply.
    pub async fn execute(&self, command: Command) -> Result<CommandReply, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .try_send(CommandRequest { command, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => ControlError::Busy,
                mpsc::error::TrySendError::Closed(_) => ControlError::Stopped,
            })?;
        // The engine drops the request unanswered only when it stops.
        Ok(answer.await.map_err(|_| ControlError::Stopped)??)
    }

    /// A new subscription to the public events, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<CallEvent> {
        self.events.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replies_come_back_a_full_queue_is_busy_and_a_gone_engine_is_stopped() {
        let (control, mut inbox) = CallControl::with_capacity(1, 4);
        // The queue holds one request nobody has taken yet: the next is refused at once.
        let (reply, answer) = oneshot::channel();
        control
            .commands
            .try_send(CommandRequest {
                command: Command::ListCalls,
                reply,
            })
            .unwrap();
        assert_eq!(
            control.execute(Command::ListCalls).await,
            Err(ControlError::Busy)
        );
        assert_eq!(ControlError::Busy.http_status(), 503);
        let queued = inbox.commands.recv().await.unwrap();
        queued.reply.send(Ok(CommandReply::Accepted)).unwrap();
        assert_eq!(answer.await.unwrap(), Ok(CommandReply::Accepted));

        // A served command carries the engine's answer, refusals included.
        let engine = tokio::spawn(async move {
            let request = inbox.commands.recv().await.unwrap();
            assert_eq!(request.command, Command::Hangup { call: 9 });
            let _ = request.reply.send(Err(CommandError::NoSuchCall(9)));
            // Then the engine stops with a request still queued.
            let request = inbox.commands.recv().await.unwrap();
            drop(request);
            drop(inbox);
        });
        let refused = control.execute(Command::Hangup { call: 9 }).await;
        assert_eq!(
            refused,
            Err(ControlError::Command(CommandError::NoSuchCall(9)))
        );
        assert_eq!(refused.unwrap_err().http_status(), 404);
        assert_eq!(
            control.execute(Command::ListCalls).await,
            Err(ControlError::Stopped)
        );
        engine.await.unwrap();
        assert_eq!(
            control.execute(Command::ListCalls).await,
            Err(ControlError::Stopped),
            "the inbox is gone"
        );
    }
}
