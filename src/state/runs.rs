//! The state directory and what its journals say about each run.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Serialize;

use super::history::RunHistory;
use super::journal::{self, Journal, Record};
use super::{StateError, io_err};
use crate::outcome::{Outputs, RunStatus, StepState};
use crate::util::fs::sync_dir;

/// Names the directory a new run is written in until its first record is durable.
const UNBORN_PREFIX: &str = ".new-";

#[derive(Debug, Clone)]
pub(crate) struct StateDir {
    pub root: PathBuf,
    /// With S3 state: the store `root` mirrors (pulled into it before use).
    pub remote: Option<std::sync::Arc<super::s3::S3State>>,
}

/// What a journal says about one step.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StepSummary {
    pub state: StepState,
    pub attempts: u32,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Fingerprint and outputs of the last success (the checkpoint).
    #[serde(skip)]
    pub checkpoint: Option<(String, Outputs)>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunSummary {
    pub run_id: String,
    pub playbook: String,
    pub playbook_name: String,
    pub playbook_hash: String,
    pub started_at: String,
    pub status: RunStatus,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
    pub steps: IndexMap<String, StepSummary>,
    pub torn_tail: bool,
}

impl StateDir {
    pub(crate) fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            remote: None,
        }
    }

    /// A local mirror of an S3 state store.
    pub(crate) fn mirroring(
        root: impl Into<PathBuf>,
        remote: std::sync::Arc<super::s3::S3State>,
    ) -> Self {
        Self {
            root: root.into(),
            remote: Some(remote),
        }
    }

    /// Opens a run's journal to append to it (with S3 state, mirrored to the store from
    /// the record after the last one there).
    pub(crate) fn reopen_run(&self, run_id: &str) -> Result<Journal, StateError> {
        let path = self.journal_path(run_id);
        let journal = Journal::reopen(&path)?;
        Ok(match &self.remote {
            Some(store) => journal.mirrored(super::s3::Mirror {
                store: store.clone(),
                run: run_id.to_string(),
                next: std::sync::Mutex::new(Journal::count(&path)?),
            }),
            None => journal,
        })
    }

    pub(crate) fn run_dir(&self, run_id: &str) -> PathBuf {
        self.root.join("runs").join(run_id)
    }

    pub(crate) fn journal_path(&self, run_id: &str) -> PathBuf {
        self.run_dir(run_id).join("journal.jsonl")
    }

    /// Creates the directory and journal of a new run whose first record is `first`.
    ///
    /// The run appears under `runs/` only once that record is durable: it is written in a
    /// hidden `runs/.new-<id>` directory that is then renamed into place. A process killed
    /// before the rename leaves no run that `resume`, `status` or `report` would have to
    /// make sense of; its hidden directory is removed by the next run (which holds the lock,
    /// so no other run can be creating one at the time).
    pub(crate) fn create_run(&self, run_id: &str, first: &Record) -> Result<Journal, StateError> {
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
        sync_dir(&runs);
        // In a store the run exists once its first record does.
        if let Some(store) = &self.remote {
            let line = serde_json::to_string(first).expect("records serialize");
            store.put_record(run_id, 0, &format!("{line}\n"))?;
        }
        self.reopen_run(run_id)
    }

    /// Removes what runs killed before their first record left behind.
    fn remove_unborn_runs(&self, runs: &Path) {
        let Ok(entries) = std::fs::read_dir(runs) else {
            return;
        };
        for e in entries.filter_map(Result::ok) {
            if e.file_name().to_string_lossy().starts_with(UNBORN_PREFIX) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// Run ids, oldest first (ids start with their UTC start time).
    pub(crate) fn list(&self) -> Result<Vec<String>, StateError> {
        let dir = self.root.join("runs");
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut ids: Vec<String> = std::fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter(|e| e.path().join("journal.jsonl").exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    pub(crate) fn summary(&self, run_id: &str) -> Result<RunSummary, StateError> {
        let path = self.journal_path(run_id);
        if !path.exists() {
            return Err(StateError::NoSuchRun(run_id.to_string()));
        }
        let replay = journal::read(&path)?;
        Ok(summarize(run_id, &replay.records, replay.torn_tail))
    }

    /// The newest run that did not pass, for `resume`.
    pub(crate) fn newest_resumable(&self) -> Result<RunSummary, StateError> {
        let Some(id) = self.list()?.pop() else {
            return Err(StateError::NothingToResume(format!(
                "no runs under {}",
                self.root.display()
            )));
        };
        let s = self.summary(&id)?;
        if s.status == RunStatus::Passed {
            return Err(StateError::NothingToResume(format!(
                "the newest run, {id}, passed"
            )));
        }
        Ok(s)
    }
}

/// What `status` and `resume` need of a run: its history, projected.
pub(crate) fn summarize(run_id: &str, records: &[Record], torn_tail: bool) -> RunSummary {
    let Some(h) = RunHistory::replay(records) else {
        // A journal without its first record (only from versions before runs were born
        // whole): nothing is known but that it did not finish.
        return RunSummary {
            run_id: run_id.to_string(),
            playbook: String::new(),
            playbook_name: String::new(),
            playbook_hash: String::new(),
            started_at: String::new(),
            status: RunStatus::Unfinished,
            finished_at: None,
            duration_ms: None,
            steps: IndexMap::new(),
            torn_tail,
        };
    };
    RunSummary {
        run_id: run_id.to_string(),
        playbook: h.playbook,
        playbook_name: h.playbook_name,
        playbook_hash: h.playbook_hash,
        started_at: h.started_at,
        status: h.status,
        finished_at: h.finished_at,
        duration_ms: h.duration_ms,
        steps: h
            .steps
            .into_iter()
            .map(|(id, s)| {
                (
                    id,
                    StepSummary {
                        state: s.state,
                        attempts: s.attempts,
                        duration_ms: s.duration_ms.unwrap_or(0),
                        reason: s.reason,
                        checkpoint: s.checkpoint,
                    },
                )
            })
            .collect(),
        torn_tail,
    }
}

/// A new run id: UTC start time plus a random suffix, so ids sort by start time.
pub(crate) fn new_run_id() -> String {
    let now = chrono::Utc::now();
    let nanos = u64::from(now.timestamp_subsec_nanos());
    let mix = (nanos ^ (u64::from(std::process::id()) << 20)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!(
        "{}-{:04x}",
        now.format("%Y%m%dT%H%M%SZ"),
        (mix >> 48) as u16
    )
}

/// The default state directory for a playbook: `.drrun/<playbook stem>/` next to it, so
/// playbooks sharing a directory do not share locks or runs.
pub(crate) fn default_state_dir(playbook: &Path) -> PathBuf {
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
            user: "ops".into(),
            service_account: None,
            break_step: None,
            pid: 1,
            at: "2026-12-02T00:00:00Z".into(),
            vars: serde_json::Map::default(),
            overrides: serde_json::Map::default(),
            objectives: crate::playbook::model::Objectives::default(),
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
