//! The state directory and what its journals say about each run.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Serialize;

use super::journal::{self, Journal, Record};
use super::{StateError, io_err};
use crate::report::StepState;

/// Names the directory a new run is written in until its first record is durable.
const UNBORN_PREFIX: &str = ".new-";

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

    /// Creates the directory and journal of a new run whose first record is `first`.
    ///
    /// The run appears under `runs/` only once that record is durable: it is written in a
    /// hidden `runs/.new-<id>` directory that is then renamed into place. A process killed
    /// before the rename leaves no run that `resume`, `status` or `report` would have to
    /// make sense of; its hidden directory is removed by the next run (which holds the lock,
    /// so no other run can be creating one at the time).
    pub fn create_run(&self, run_id: &str, first: &Record) -> Result<Journal, StateError> {
        let runs = self.root.join("runs");
        std::fs::create_dir_all(&runs).map_err(io_err(&runs))?;
        self.remove_unborn_runs(&runs);
        let unborn = runs.join(format!("{UNBORN_PREFIX}{run_id}"));
        std::fs::create_dir(&unborn).map_err(io_err(&unborn))?;
        let journal = Journal::create(&unborn.join("journal.jsonl"))?;
        journal.append(first)?;
        drop(journal);
        let dir = self.run_dir(run_id);
        std::fs::rename(&unborn, &dir).map_err(io_err(&dir))?;
        journal::sync_dir(&runs);
        Journal::reopen(&self.journal_path(run_id))
    }

    /// Removes what runs killed before their first record left behind.
    fn remove_unborn_runs(&self, runs: &Path) {
        let Ok(entries) = std::fs::read_dir(runs) else {
            return;
        };
        for e in entries.filter_map(|e| e.ok()) {
            if e.file_name().to_string_lossy().starts_with(UNBORN_PREFIX) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
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
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn started(run_id: &str) -> Record {
        Record::RunStarted {
            run_id: run_id.into(),
            playbook: "p.yaml".into(),
            playbook_name: "p".into(),
            playbook_hash: "h".into(),
            drrun_version: "0".into(),
            host: "host".into(),
            pid: 1,
            at: "2026-12-02T00:00:00Z".into(),
            vars: Default::default(),
            overrides: Default::default(),
            objectives: Default::default(),
            steps: Vec::new(),
        }
    }

    #[test]
    fn a_run_killed_before_its_first_record_leaves_nothing_to_resume() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        // What a process killed between creating the journal and its first fsync leaves.
        let unborn = dir.path().join("runs").join(".new-20261202T000000Z-dead");
        std::fs::create_dir_all(&unborn).unwrap();
        std::fs::write(unborn.join("journal.jsonl"), "").unwrap();
        assert!(state.list().unwrap().is_empty());
        assert!(matches!(
            state.newest_resumable(),
            Err(StateError::NothingToResume(_))
        ));

        state
            .create_run("20261202T000001Z-beef", &started("20261202T000001Z-beef"))
            .unwrap()
            .append(&Record::PhaseStarted {
                phase: "main".into(),
                at: "t".into(),
            })
            .unwrap();
        assert!(
            !unborn.exists(),
            "the next run clears what the killed one left"
        );
        assert_eq!(state.list().unwrap(), ["20261202T000001Z-beef"]);
        let s = state.summary("20261202T000001Z-beef").unwrap();
        assert_eq!(s.playbook_name, "p");
        let records = journal::read(&state.journal_path("20261202T000001Z-beef"))
            .unwrap()
            .records;
        assert_eq!(
            records.len(),
            2,
            "the journal reopened after the rename appends"
        );
    }
}
