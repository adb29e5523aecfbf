use serde::{Deserialize, Serialize};

use crate::playbook::model::FailureClass;

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    Pending,
    Running,
    Succeeded,
    /// Skipped because a completed checkpoint with the same fingerprint was reused.
    Reused,
    Failed,
    Skipped,
    Cancelled,
}

impl StepState {
    pub fn as_str(self) -> &'static str {
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
    pub fn is_success(self) -> bool {
        matches!(self, Self::Succeeded | Self::Reused)
    }
}

/// What the engine tells the printer. Also the `--output json` JSONL stream.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run_id: String,
        playbook: String,
        resumed: bool,
        steps: usize,
    },
    Notice {
        text: String,
    },
    StepStarted {
        step: String,
        kind: String,
        attempt: u32,
    },
    StepProgress {
        step: String,
        done: u64,
        total: Option<u64>,
    },
    StepNote {
        step: String,
        text: String,
    },
    StepRetrying {
        step: String,
        attempt: u32,
        delay_ms: u64,
        class: FailureClass,
        error: String,
    },
    StepFinished {
        step: String,
        state: StepState,
        attempts: u32,
        duration_ms: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    PhaseStarted {
        phase: String,
    },
    RunFinished {
        run_id: String,
        status: String,
        duration_ms: u64,
        summary: Vec<SummaryRow>,
        /// The RTO and RPO headline lines.
        objectives: Vec<String>,
        /// Where report.md was written.
        report: Option<String>,
    },
}

/// One line of the final summary table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SummaryRow {
    pub step: String,
    pub kind: String,
    pub state: StepState,
    pub attempts: u32,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
