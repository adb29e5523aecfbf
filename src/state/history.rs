//! The one replay of a run's journal: what happened to the run and to each step, in the
//! vocabulary of [`crate::outcome`]. `status`, `resume` and the drill report all read a
//! run through this, so they cannot disagree about it.

use indexmap::IndexMap;

use super::journal::{PlannedStep, Record};
use crate::outcome::{FailureClass, Outputs, RunStatus, StepState};
use crate::playbook::model::Objectives;

/// A run as its journal tells it.
#[derive(Debug, Clone)]
pub(crate) struct RunHistory {
    pub run_id: String,
    pub playbook: String,
    pub playbook_name: String,
    /// sha256 of the playbook as last run (a resume may run an edited playbook).
    pub playbook_hash: String,
    pub drrun_version: String,
    pub host: String,
    /// Who started the run.
    pub user: String,
    pub service_account: Option<String>,
    /// The step the run broke on purpose (`--break`).
    pub break_step: Option<String>,
    /// The vars as rendered when the run started (secrets redacted).
    pub vars: serde_json::Map<String, serde_json::Value>,
    pub started_at: String,
    pub status: RunStatus,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
    /// How many times the run was resumed.
    pub resumed: u32,
    /// The objectives of the last session (a resume may change them).
    pub objectives: Objectives,
    /// `-e`/`--vars-file` overrides the run started with.
    pub overrides: serde_json::Map<String, serde_json::Value>,
    /// Started, interrupted (with the signal), resumed, finally, finished, with times.
    pub timeline: Vec<(String, String)>,
    /// Every step, planned or seen, in plan order.
    pub steps: IndexMap<String, StepHistory>,
}

/// A step as its journal records tell it.
#[derive(Debug, Clone)]
pub(crate) struct StepHistory {
    pub kind: String,
    /// `steps` or `finally`.
    pub phase: String,
    pub state: StepState,
    /// Skipped because its `when` was false: on purpose, so it holds nothing back.
    pub skipped_on_purpose: bool,
    pub attempts: u32,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
    pub class: Option<FailureClass>,
    /// The error of a failure (or of the last retry), or why the step was skipped.
    pub reason: Option<String>,
    /// Outputs as journaled (secrets were redacted before they were written).
    pub outputs: Option<Outputs>,
    /// Fingerprint and outputs of the last success: the checkpoint a resume may reuse.
    pub checkpoint: Option<(String, Outputs)>,
    /// When the step last succeeded (a reused step keeps its earlier success).
    pub succeeded_at: Option<String>,
}

impl StepHistory {
    fn new(kind: &str, phase: &str) -> Self {
        Self {
            kind: kind.to_string(),
            phase: phase.to_string(),
            state: StepState::Pending,
            skipped_on_purpose: false,
            attempts: 0,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            class: None,
            reason: None,
            outputs: None,
            checkpoint: None,
            succeeded_at: None,
        }
    }
}

impl RunHistory {
    /// Replays `records`; `None` when they do not begin with the run's start.
    pub(crate) fn replay(records: &[Record]) -> Option<Self> {
        let Some(Record::RunStarted {
            run_id,
            playbook,
            playbook_name,
            playbook_hash,
            drrun_version,
            host,
            user,
            service_account,
            break_step,
            at,
            vars,
            overrides,
            objectives,
            steps,
            ..
        }) = records.first()
        else {
            return None;
        };
        let mut h = Self {
            run_id: run_id.clone(),
            playbook: playbook.clone(),
            playbook_name: playbook_name.clone(),
            playbook_hash: playbook_hash.clone(),
            drrun_version: drrun_version.clone(),
            host: host.clone(),
            user: user.clone(),
            service_account: service_account.clone(),
            break_step: break_step.clone(),
            vars: vars.clone(),
            started_at: at.clone(),
            status: RunStatus::Unfinished,
            finished_at: None,
            duration_ms: None,
            resumed: 0,
            objectives: objectives.clone(),
            overrides: overrides.clone(),
            timeline: vec![("run started".into(), at.clone())],
            steps: IndexMap::new(),
        };
        h.plan(steps);
        let mut phase = "steps".to_string();
        for r in &records[1..] {
            h.apply(r, &mut phase);
        }
        Some(h)
    }

    /// Adds the planned steps not seen yet (and the kind of those that are).
    fn plan(&mut self, planned: &[PlannedStep]) {
        for p in planned {
            self.steps
                .entry(p.id.clone())
                .or_insert_with(|| StepHistory::new(&p.kind, &p.phase))
                .kind
                .clone_from(&p.kind);
        }
    }

    fn step(&mut self, id: &str, phase: &str) -> &mut StepHistory {
        self.steps
            .entry(id.to_string())
            .or_insert_with(|| StepHistory::new("", phase))
    }

    fn apply(&mut self, r: &Record, phase: &mut String) {
        match r {
            Record::RunStarted { .. } => {}
            Record::Resumed {
                playbook_hash,
                objectives,
                steps,
                at,
                ..
            } => {
                self.timeline.push(("resumed".into(), at.clone()));
                self.resumed += 1;
                self.status = RunStatus::Unfinished;
                self.finished_at = None;
                self.duration_ms = None;
                "steps".clone_into(phase);
                self.playbook_hash.clone_from(playbook_hash);
                // Journals of older versions recorded no plan with a resume.
                if !steps.is_empty() {
                    self.objectives = objectives.clone();
                    self.plan(steps);
                }
            }
            Record::PhaseStarted { phase: p, at } => {
                self.timeline.push((format!("{p} started"), at.clone()));
                phase.clone_from(p);
            }
            Record::StepStarted {
                step,
                kind,
                attempt,
                at,
                ..
            } => {
                let s = self.step(step, phase);
                s.kind.clone_from(kind);
                s.state = StepState::Running;
                s.skipped_on_purpose = false;
                s.attempts = *attempt;
                s.started_at = Some(at.clone());
                s.finished_at = None;
                s.duration_ms = None;
                s.class = None;
                s.reason = None;
            }
            Record::StepRetrying {
                step,
                attempt,
                class,
                error,
                ..
            } => {
                let s = self.step(step, phase);
                s.attempts = *attempt;
                s.class = Some(*class);
                s.reason = Some(error.clone());
            }
            Record::StepSucceeded {
                step,
                fingerprint,
                outputs,
                attempts,
                duration_ms,
                at,
            } => {
                let s = self.step(step, phase);
                s.state = StepState::Succeeded;
                s.attempts = *attempts;
                s.duration_ms = Some(*duration_ms);
                s.finished_at = Some(at.clone());
                s.class = None;
                s.reason = None;
                s.outputs = Some(outputs.clone());
                s.checkpoint = Some((fingerprint.clone(), outputs.clone()));
                s.succeeded_at = Some(at.clone());
            }
            Record::StepReused {
                step,
                fingerprint,
                outputs,
                ..
            } => {
                let s = self.step(step, phase);
                s.state = StepState::Reused;
                s.class = None;
                s.reason = None;
                s.outputs = Some(outputs.clone());
                s.checkpoint = Some((fingerprint.clone(), outputs.clone()));
            }
            Record::StepFailed {
                step,
                class,
                error,
                attempts,
                duration_ms,
                at,
            } => {
                let s = self.step(step, phase);
                s.state = StepState::Failed;
                s.attempts = *attempts;
                s.duration_ms = Some(*duration_ms);
                s.finished_at = Some(at.clone());
                s.class = Some(*class);
                s.reason = Some(error.clone());
                s.succeeded_at = None;
            }
            Record::StepSkipped {
                step,
                reason,
                satisfied,
                ..
            } => {
                let s = self.step(step, phase);
                s.state = StepState::Skipped;
                s.skipped_on_purpose = *satisfied;
                s.reason = Some(reason.clone());
            }
            Record::StepCancelled {
                step,
                attempts,
                duration_ms,
                left,
                at,
            } => {
                let s = self.step(step, phase);
                s.state = StepState::Cancelled;
                s.reason = left.as_ref().map(|l| format!("cancelled; {l}"));
                s.attempts = *attempts;
                s.duration_ms = Some(*duration_ms);
                s.finished_at = Some(at.clone());
            }
            Record::Interrupted { signal, at } => {
                self.timeline
                    .push((format!("interrupted ({signal})"), at.clone()));
            }
            Record::RunFinished {
                status,
                duration_ms,
                at,
            } => {
                self.timeline
                    .push((format!("run finished: {status}"), at.clone()));
                self.status = *status;
                self.finished_at = Some(at.clone());
                self.duration_ms = Some(*duration_ms);
            }
        }
    }
}
