//! What the engine tells whoever shows the run (the printer, the JSONL stream): the
//! engine and the kinds never print, they send [`Event`]s to a [`Reporter`].

use serde::{Deserialize, Serialize};

use crate::outcome::{FailureClass, ObjectiveResult, RunStatus, StepState};

/// Receives engine events. Implementations must be cheap and never block for long.
pub(crate) trait Reporter: Send + Sync {
    fn event(&self, event: &Event);
}

/// What the engine tells the printer. Also the `--output json` JSONL stream.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum Event {
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
    /// What a long step is doing now ("restoring: 312 of 508 TOC entries").
    StepPhase {
        step: String,
        phase: String,
    },
    /// A line a step's program printed (redacted), shown with `-v`; every line also goes
    /// to the step's log file in the run directory.
    StepOutput {
        step: String,
        stream: OutputStream,
        line: String,
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
        status: RunStatus,
        duration_ms: u64,
        summary: Vec<SummaryRow>,
        /// The RTO and RPO results.
        objectives: Vec<ObjectiveResult>,
        /// Where report.md was written.
        report: Option<String>,
    },
}

/// Which stream a program's line came from.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OutputStream {
    Stdout,
    Stderr,
}

/// One line of the final summary table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SummaryRow {
    pub step: String,
    pub kind: String,
    pub state: StepState,
    pub attempts: u32,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
