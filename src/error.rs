//! Errors that reach the command line, and their exit codes.

use crate::diag::Diagnostics;
use crate::exec::EngineError;
use crate::state::StateError;

/// Exit codes: 0 drill passed, 1 drill failed, 2 playbook or usage error, 128 + the
/// signal when a signal stopped it (`exec::signals::exit_code`: 130 Ctrl-C, 143 SIGTERM).
pub(crate) const EXIT_FAILED: u8 = 1;
pub(crate) const EXIT_USAGE: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// Already rendered with positions; printed as is.
    #[error("{0}")]
    Playbook(Diagnostics),
    // The io error follows as the source (`{err:#}`), so it is said once.
    #[error("cannot read {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    State(#[from] StateError),
}

impl Error {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::Playbook(_) | Self::Read { .. } | Self::Usage(_) => EXIT_USAGE,
            Self::Engine(EngineError::Secrets(_) | EngineError::Refused(_)) => EXIT_USAGE,
            Self::Engine(EngineError::State(e)) | Self::State(e) => match e {
                StateError::Locked { .. }
                | StateError::NoSuchRun(_)
                | StateError::NothingToResume(_) => EXIT_USAGE,
                _ => EXIT_FAILED,
            },
        }
    }
}
