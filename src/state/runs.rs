//! The state directory and what its journals say about each run.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Serialize;

use super::journal::{self, Record};
use super::{StateError, io_err};
use crate::report::StepState;

#[derive(Debug, Clone)]
pub struct StateDir {
    pub root: PathBuf,
}

/// What a journal says about one step.
#[derive(Debug, Clone, Serialize)]
pub struct StepSummary {
    pub state: StepState,
    pub attempts: u32,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Fingerprint and outputs of the last success (the checkpoint).
    #[serde(skip)]
    pub checkpoint: Option<(String, crate::steps::Outputs)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub playbook: String,
    pub playbook_name: String,
    pub playbook_hash: String,
    pub started_at: String,
    /// `passed`, `failed`, `interrupted`, or `unfinished` (the process died or is running).
    pub status: String,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
    pub steps: IndexMap<String, StepSummary>,
    pub torn_tail: bool,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn run_dir(&self, run_id: &str) -> PathBuf {
        self.root.join("runs").join(run_id)
    }

    pub fn journal_path(&self, run_id: &str) -> PathBuf {
        self.run_dir(run_id).join("journal.jsonl")
    }

    /// Run ids, oldest first (ids start with their UTC start time).
    pub fn list(&self) -> Result<Vec<String>, StateError> {
        let dir = self.root.join("runs");
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut ids: Vec<String> = std::fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("journal.jsonl").exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    pub fn summary(&self, run_id: &str) -> Result<RunSummary, StateError> {
        let path = self.journal_path(run_id);
        if !path.exists() {
            return Err(StateError::NoSuchRun(run_id.to_string()));
        }
        let replay = journal::read(&path)?;
        Ok(summarize(run_id, &replay.records, replay.torn_tail))
    }

    /// The newest run that did not pass, for `resume`.
    pub fn newest_resumable(&self) -> Result<RunSummary, StateError> {
        let Some(id) = self.list()?.pop() else {
            return Err(StateError::NothingToResume(format!(
                "no runs under {}",
                self.root.display()
            )));
        };
        let s = self.summary(&id)?;
        if s.status == "passed" {
            return Err(StateError::NothingToResume(format!(
                "the newest run, {id}, passed"
            )));
        }
        Ok(s)
    }
}

pub fn summarize(run_id: &str, records: &[Record], torn_tail: bool) -> RunSummary {
    let mut s = RunSummary {
        run_id: run_id.to_string(),
        playbook: String::new(),
        playbook_name: String::new(),
        playbook_hash: String::new(),
        started_at: String::new(),
        status: "unfinished".into(),
        finished_at: None,
        duration_ms: None,
        steps: IndexMap::new(),
        torn_tail,
    };
    let blank = || StepSummary {
        state: StepState::Pending,
        attempts: 0,
        duration_ms: 0,
        reason: None,
        checkpoint: None,
    };
    for r in records {
        match r {
            Record::RunStarted {
                playbook,
                playbook_name,
                playbook_hash,
                at,
                ..
            } => {
                s.playbook = playbook.clone();
                s.playbook_name = playbook_name.clone();
                s.playbook_hash = playbook_hash.clone();
                s.started_at = at.clone();
            }
            Record::Resumed { playbook_hash, .. } => {
                s.status = "unfinished".into();
                s.finished_at = None;
                s.playbook_hash = playbook_hash.clone();
            }
            Record::StepStarted { step, attempt, .. } => {
                let e = s.steps.entry(step.clone()).or_insert_with(blank);
                e.state = StepState::Running;
                e.attempts = *attempt;
                e.reason = None;
            }
            Record::StepRetrying { step, attempt, .. } => {
                s.steps.entry(step.clone()).or_insert_with(blank).attempts = *attempt;
            }
            Record::StepSucceeded {
                step,
                fingerprint,
                outputs,
                attempts,
                duration_ms,
                ..
            } => {
                let e = s.steps.entry(step.clone()).or_insert_with(blank);
                e.state = StepState::Succeeded;
                e.attempts = *attempts;
                e.duration_ms = *duration_ms;
                e.reason = None;
                e.checkpoint = Some((fingerprint.clone(), outputs.clone()));
            }
            Record::StepReused {
                step,
                fingerprint,
                outputs,
                ..
            } => {
                let e = s.steps.entry(step.clone()).or_insert_with(blank);
                e.state = StepState::Reused;
                e.reason = None;
                e.checkpoint = Some((fingerprint.clone(), outputs.clone()));
            }
            Record::StepFailed {
                step,
                error,
                attempts,
                duration_ms,
                ..
            } => {
                let e = s.steps.entry(step.clone()).or_insert_with(blank);
                e.state = StepState::Failed;
                e.attempts = *attempts;
                e.duration_ms = *duration_ms;
                e.reason = Some(error.clone());
            }
            Record::StepSkipped { step, reason, .. } => {
                let e = s.steps.entry(step.clone()).or_insert_with(blank);
                e.state = StepState::Skipped;
                e.reason = Some(reason.clone());
            }
            Record::StepCancelled {
                step,
                attempts,
                duration_ms,
                ..
            } => {
                let e = s.steps.entry(step.clone()).or_insert_with(blank);
                e.state = StepState::Cancelled;
                e.attempts = *attempts;
                e.duration_ms = *duration_ms;
            }
            Record::RunFinished {
                status,
                at,
                duration_ms,
            } => {
                s.status = status.clone();
                s.finished_at = Some(at.clone());
                s.duration_ms = Some(*duration_ms);
            }
            Record::PhaseStarted { .. } | Record::Interrupted { .. } => {}
        }
    }
    s
}

/// A new run id: UTC start time plus a random suffix, so ids sort by start time.
pub fn new_run_id() -> String {
    let now = chrono::Utc::now();
    let nanos = now.timestamp_subsec_nanos() as u64;
    let mix = (nanos ^ ((std::process::id() as u64) << 20)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!(
        "{}-{:04x}",
        now.format("%Y%m%dT%H%M%SZ"),
        (mix >> 48) as u16
    )
}

/// The default state directory for a playbook: `.drrun/<playbook stem>/` next to it, so
/// playbooks sharing a directory do not share locks or runs.
pub fn default_state_dir(playbook: &Path) -> PathBuf {
    let parent = playbook
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let stem = playbook
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("playbook");
    parent.join(".drrun").join(stem)
}
