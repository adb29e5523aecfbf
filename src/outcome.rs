//! The one vocabulary of states, from the journal to the report, the JUnit file and the
//! printer. Everything that says how a step or a run stands uses these types; nothing
//! compares state strings.

use schemars::JsonSchema;

use crate::duration::human_ms;
use serde::{Deserialize, Serialize};

/// A step's outputs: `steps.<id>.outputs.<name>`.
pub(crate) type Outputs = serde_json::Map<String, serde_json::Value>;

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum StepState {
    /// Not started (yet, or ever: the run ended first).
    Pending,
    /// Started and not finished; in a journal of a dead process: it died while this ran.
    Running,
    Succeeded,
    /// Not run again: a checkpoint with the same fingerprint was reused.
    Reused,
    Failed,
    /// Not run: its `when` was false, a dependency did not succeed, or the run stopped.
    Skipped,
    Cancelled,
}

impl StepState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Reused => "reused",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Cancelled => "cancelled",
        }
    }

    /// Done, and its outputs are available to dependents.
    pub(crate) fn is_success(self) -> bool {
        matches!(self, Self::Succeeded | Self::Reused)
    }
}

impl std::fmt::Display for StepState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a run stands. The journal's `run_finished` record holds one of the first three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RunStatus {
    Passed,
    Failed,
    Interrupted,
    /// No `run_finished` record: the process is still running or died; resumable.
    Unfinished,
}

impl RunStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
            Self::Unfinished => "unfinished",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a step attempt failed; decides whether it may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum FailureClass {
    /// The service could not be reached; nothing was done.
    Connection,
    /// The service asked us to slow down or was briefly unavailable (HTTP 429/503, S3 SlowDown).
    Throttled,
    /// The attempt hit its time limit.
    Timeout,
    /// A request was sent but its outcome is unknown (connection lost mid-way).
    Ambiguous,
    /// A command exited with a code not in `ok_exit_codes`.
    ExitCode,
    /// An assertion about the result failed (wrong status, too few rows, checksum mismatch).
    Assertion,
    /// Bad configuration or input that another attempt cannot fix.
    Config,
    /// Refused by a guard.
    Guard,
    /// drrun itself failed (a panic in a kind): a bug to report, not a drill result.
    Internal,
    /// Anything else.
    Other,
}

impl FailureClass {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Connection => "connection",
            Self::Throttled => "throttled",
            Self::Timeout => "timeout",
            Self::Ambiguous => "ambiguous",
            Self::ExitCode => "exit-code",
            Self::Assertion => "assertion",
            Self::Config => "config",
            Self::Guard => "guard",
            Self::Internal => "internal",
            Self::Other => "other",
        }
    }
}

/// Why an attempt (or a request to a service) failed, classified so the engine knows
/// whether to retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Failure {
    pub(crate) class: FailureClass,
    pub(crate) message: String,
    /// What the step leaves behind in the world when it stops here (a dropped and
    /// partly restored database): said in the report also when it was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) left: Option<String>,
}

impl Failure {
    pub(crate) fn new(class: FailureClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
            left: None,
        }
    }

    /// Says what the step leaves behind, in the failure's message too.
    #[must_use]
    pub(crate) fn leaving(mut self, left: impl Into<String>) -> Self {
        let left = left.into();
        self.message = format!("{}; {left}", self.message);
        self.left = Some(left);
        self
    }

    /// Bad configuration or input that another attempt cannot fix.
    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::new(FailureClass::Config, message)
    }
}

/// What a measure says about its objective, rendered the same everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub(crate) enum Verdict {
    Met {
        spare_ms: u64,
    },
    /// Missed by this much, or (`None`) not shown to hold: nothing was measured.
    Missed {
        by_ms: Option<u64>,
    },
    /// No objective was set.
    NoObjective,
}

impl Verdict {
    pub(crate) fn missed(self) -> bool {
        matches!(self, Self::Missed { .. })
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Met { spare_ms } => write!(f, "met, {} to spare", human_ms(*spare_ms)),
            Self::Missed { by_ms: Some(by) } => write!(f, "MISSED by {}", human_ms(*by)),
            Self::Missed { by_ms: None } => f.write_str("MISSED"),
            Self::NoObjective => f.write_str("no objective set"),
        }
    }
}

/// One objective's result, as the run's last event carries it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ObjectiveResult {
    /// `RTO` or `RPO`.
    pub name: String,
    pub target_ms: Option<u64>,
    pub measured_ms: Option<u64>,
    pub verdict: Verdict,
    /// The headline line the terminal shows.
    pub text: String,
}
