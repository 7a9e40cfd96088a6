//! Operator commands on the local PostgreSQL (`POST /restart`, a due scheduled restart,
//! `POST /reinitialize`): the agent hands the command to [`crate::decide`] in the cycle's
//! observation, and the decision carries the operations and the answer for the caller, so
//! that a command never races with what the core decides.

/// A command the operator gave this member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberCommand {
    /// Restart PostgreSQL in its role (a fast stop; the core starts it again).
    Restart,
    /// Stop PostgreSQL, move the data directory aside and clone it again from the leader;
    /// `force` aborts an operation that runs.
    Reinitialize { force: bool },
}

/// The answer to a command: carried out (started), or refused with an HTTP status and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandVerdict {
    Started(String),
    Refused { status: u16, message: String },
}

impl CommandVerdict {
    pub(crate) fn refused(status: u16, message: impl Into<String>) -> Self {
        CommandVerdict::Refused {
            status,
            message: message.into(),
        }
    }
}
