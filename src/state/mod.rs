//! Run state: an append-only journal per run, checkpoints replayed from it, and the lock.
//!
//! Layout under the state directory (default `.drrun/` next to the playbook):
//! `lock` (holder of the running drill), `runs/<run-id>/journal.jsonl`, `runs/<run-id>/work/`.

pub(crate) mod fingerprint;
pub(crate) mod history;
pub(crate) mod journal;
pub(crate) mod lease;
pub(crate) mod lock;
pub(crate) mod runs;
pub(crate) mod s3;

use std::path::PathBuf;

/// Errors of the state layer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: corrupt journal record: {message}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("another drill is running with this state ({dir}): {holder}")]
    Locked { dir: String, holder: String },
    #[error("state store {url}: {message}")]
    Store { url: String, message: String },
    #[error(
        "state store {url}: the lease was taken over by another holder; this run writes nothing more"
    )]
    LeaseLost { url: String },
    #[error("no run `{0}` in this state directory")]
    NoSuchRun(String),
    #[error("nothing to resume: {0}")]
    NothingToResume(String),
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.into();
    move |source| StateError::Io { path, source }
}
