//! The engine: runs a [`Plan`] as a DAG on tokio, journaling every state change first.

mod attempt;
pub mod signals;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::plan::context::{RunInfo, SecretValues};
use crate::plan::{Phase, Plan};
use crate::playbook::model::{FailureClass, SecretRef};
use crate::playbook::template::Templates;
use crate::report::drill::DrillReport;
use crate::report::event::SummaryRow;
use crate::report::{Event, Reporter, StepState};
use crate::state::fingerprint::fingerprint;
use crate::state::journal::{self, Journal, PlannedStep, Record, now};
use crate::state::lock::{Holder, StateLock};
use crate::state::redact::Redactor;
use crate::state::runs::{StateDir, new_run_id};
use crate::state::{StateError, io_err};
use crate::steps::{Outputs, StepConfig, StepError};
use attempt::{Attempt, TaskOutcome};

/// Which run to continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// Start a new run.
    No,
    /// Continue the newest run that did not pass.
    Newest,
    /// Continue this run.
    Id(String),
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub state_dir: PathBuf,
    pub jobs: usize,
    pub fail_fast: bool,
    pub resume: Resume,
    /// Command-line var overrides, recorded so `drrun resume` can reuse them.
    pub overrides: serde_json::Map<String, serde_json::Value>,
    /// `--report DIR`: where else to write the drill report.
    pub report_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Passed,
    Failed,
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
        }
    }
}

#[derive(Debug)]
pub struct RunOutcome {
    pub run_id: String,
    pub status: RunStatus,
    pub summary: Vec<SummaryRow>,
    pub duration: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("secret `{name}`: {message}")]
    Secret { name: String, message: String },
}

/// Reads every declared secret. Values stay in memory for this process only.
pub fn resolve_secrets(plan: &Plan) -> Result<IndexMap<String, String>, EngineError> {
    let mut values = IndexMap::new();
    for (name, source) in &plan.secrets {
        let value = match source {
            SecretRef::Env(var) => std::env::var(var).map_err(|_| EngineError::Secret {
                name: name.clone(),
                message: format!("environment variable `{var}` is not set"),
            })?,
            SecretRef::File(path) => {
                let p = crate::util::expand_home(path);
                let p = if p.is_absolute() {
                    p
                } else {
                    plan.base_dir.join(p)
                };
                let text = std::fs::read_to_string(&p).map_err(|e| EngineError::Secret {
                    name: name.clone(),
                    message: format!("cannot read {}: {e}", p.display()),
                })?;
                text.strip_suffix('\n')
                    .map(|t| t.strip_suffix('\r').unwrap_or(t))
                    .unwrap_or(&text)
                    .to_string()
            }
        };
        values.insert(name.clone(), value);
    }
    Ok(values)
}

enum Status {
    Pending,
    Running,
    Done {
        state: StepState,
        /// Whether dependents may run (succeeded, reused, or skipped by `when`).
        satisfied: bool,
        attempts: u32,
        duration: Duration,
        reason: Option<String>,
    },
}

struct Engine {
    plan: Arc<Plan>,
    journal: Arc<Journal>,
    reporter: Arc<dyn Reporter>,
    secrets: IndexMap<String, String>,
    redactor: Arc<Redactor>,
    templates: Templates,
    run: RunInfo,
    work_dir: PathBuf,
    /// Shared by every step's context (built once, not per step).
    guards: Arc<crate::steps::guard::Guards>,
    jobs: usize,
    fail_fast: bool,
    /// Checkpoints from earlier invocations of this run: step -> (fingerprint, outputs).
    checkpoints: HashMap<String, (String, Outputs)>,
    status: Vec<Status>,
    outputs: IndexMap<String, Outputs>,
    /// Executed (not reused) in this invocation; its dependents may not reuse checkpoints.
    executed: Vec<bool>,
}

/// Runs `plan` to the end (or to interruption). `stop` is cancelled by the first Ctrl-C.
pub async fn run(
    plan: Arc<Plan>,
    opts: RunOptions,
    reporter: Arc<dyn Reporter>,
    stop: CancellationToken,
) -> Result<RunOutcome, EngineError> {
    let started = Instant::now();
    let state = StateDir::new(&opts.state_dir);
    let mut holder = Holder {
        pid: std::process::id(),
        host: crate::util::hostname(),
        run_id: None,
        started_at: now(),
        playbook: plan.file.display().to_string(),
    };
    let (lock, stale) = StateLock::acquire(&state.root, &holder)?;
    if let Some(old) = stale {
        reporter.event(&Event::Notice {
            text: format!("took over a stale lock left by {old}: that process is gone"),
        });
    }
    let secrets = resolve_secrets(&plan)?;
    let redactor = Arc::new(Redactor::new(
        secrets.iter().map(|(k, v)| (k.clone(), v.clone())),
    ));

    let (run_id, journal, checkpoints, started_at, resumed) = match &opts.resume {
        Resume::No => {
            let run_id = new_run_id();
            let at = now();
            let first = Record::RunStarted {
                run_id: run_id.clone(),
                playbook: std::fs::canonicalize(&plan.file)
                    .unwrap_or(plan.file.clone())
                    .display()
                    .to_string(),
                playbook_name: plan.name.clone(),
                playbook_hash: plan.source_hash.clone(),
                drrun_version: env!("CARGO_PKG_VERSION").to_string(),
                host: holder.host.clone(),
                pid: holder.pid,
                at: at.clone(),
                vars: plan
                    .vars
                    .iter()
                    .map(|(k, v)| (k.clone(), redactor.redact_json(v)))
                    .collect(),
                overrides: opts.overrides.clone(),
                objectives: plan.objectives.clone(),
                steps: PlannedStep::of(&plan),
            };
            let journal = state.create_run(&run_id, &first)?;
            (run_id, journal, HashMap::new(), at, false)
        }
        resume => {
            let summary = match resume {
                Resume::Id(id) => state.summary(id)?,
                _ => state.newest_resumable()?,
            };
            if summary.status == "passed" {
                return Err(
                    StateError::NothingToResume(format!("run {} passed", summary.run_id)).into(),
                );
            }
            let journal = Journal::reopen(&state.journal_path(&summary.run_id))?;
            if summary.torn_tail {
                reporter.event(&Event::Notice { text: "the journal ended in a torn record (the process died while writing it); it was ignored".into() });
            }
            journal.append(&Record::Resumed {
                pid: holder.pid,
                at: now(),
                playbook_hash: plan.source_hash.clone(),
                objectives: plan.objectives.clone(),
                steps: PlannedStep::of(&plan),
            })?;
            let checkpoints = summary
                .steps
                .iter()
                .filter(|(_, s)| s.state.is_success())
                .filter_map(|(id, s)| s.checkpoint.clone().map(|c| (id.clone(), c)))
                .collect();
            (
                summary.run_id.clone(),
                journal,
                checkpoints,
                summary.started_at.clone(),
                true,
            )
        }
    };
    holder.run_id = Some(run_id.clone());
    lock.write(&holder)?;
    let work_dir = state.run_dir(&run_id).join("work");
    std::fs::create_dir_all(&work_dir).map_err(io_err(&work_dir))?;

    reporter.event(&Event::RunStarted {
        run_id: run_id.clone(),
        playbook: plan.file.display().to_string(),
        resumed,
        steps: plan.steps.len(),
    });
    let n = plan.steps.len();
    let mut engine = Engine {
        plan: plan.clone(),
        journal: Arc::new(journal),
        reporter: reporter.clone(),
        secrets,
        redactor,
        templates: Templates::new(),
        run: RunInfo {
            id: run_id.clone(),
            started_at,
            dry_run: false,
            playbook: plan.file.display().to_string(),
            status: "running".into(),
        },
        work_dir,
        guards: Arc::new(plan.guards.clone()),
        jobs: opts.jobs.max(1),
        fail_fast: opts.fail_fast,
        checkpoints,
        status: (0..n).map(|_| Status::Pending).collect(),
        outputs: IndexMap::new(),
        executed: vec![false; n],
    };

    let main_ok = engine
        .run_phase(Phase::Main, stop.child_token(), &stop)
        .await?;
    let interrupted = stop.is_cancelled();
    if interrupted {
        engine.journal.append(&Record::Interrupted {
            signal: "SIGINT/SIGTERM".into(),
            at: now(),
        })?;
    }
    let main_status = if interrupted {
        RunStatus::Interrupted
    } else if main_ok {
        RunStatus::Passed
    } else {
        RunStatus::Failed
    };
    engine.run.status = main_status.as_str().into();
    let finally_ok = if plan.finally_levels.is_empty() {
        true
    } else {
        engine.journal.append(&Record::PhaseStarted {
            phase: "finally".into(),
            at: now(),
        })?;
        reporter.event(&Event::PhaseStarted {
            phase: "finally".into(),
        });
        // `finally` must run even after Ctrl-C, so it gets a token the first signal does not cancel.
        engine
            .run_phase(
                Phase::Finally,
                CancellationToken::new(),
                &CancellationToken::new(),
            )
            .await?
    };
    let status = match main_status {
        RunStatus::Passed if !finally_ok => RunStatus::Failed,
        s => s,
    };
    // A drill whose steps all passed still fails when it missed an objective.
    // The report is built from the journal alone; read it once and add the last record.
    let mut records = journal::read(&state.journal_path(&run_id))?.records;
    let measured = DrillReport::from_records(&records);
    let status = match status {
        RunStatus::Passed if measured.as_ref().is_some_and(DrillReport::objective_missed) => {
            RunStatus::Failed
        }
        s => s,
    };
    let duration = started.elapsed();
    let finished = Record::RunFinished {
        status: status.as_str().into(),
        duration_ms: duration.as_millis() as u64,
        at: now(),
    };
    engine.journal.append(&finished)?;
    records.push(finished);
    let report = DrillReport::from_records(&records);
    let mut report_files = Vec::new();
    if let Some(report) = &report {
        let dirs = std::iter::once(state.run_dir(&run_id)).chain(opts.report_dir.clone());
        for dir in dirs {
            match report.write_files(&dir) {
                Ok(files) => report_files.extend(files),
                Err(e) => reporter.event(&Event::Notice {
                    text: format!("could not write the drill report to {}: {e}", dir.display()),
                }),
            }
        }
    }
    let summary = engine.summary();
    reporter.event(&Event::RunFinished {
        run_id: run_id.clone(),
        status: status.as_str().into(),
        duration_ms: duration.as_millis() as u64,
        summary: summary.clone(),
        objectives: report
            .as_ref()
            .map(DrillReport::headline)
            .unwrap_or_default(),
        report: report_files
            .iter()
            .find(|p| p.extension().is_some_and(|e| e == "md"))
            .map(|p| p.display().to_string()),
    });
    drop(lock);
    Ok(RunOutcome {
        run_id,
        status,
        summary,
        duration,
    })
}

enum Readiness {
    Ready,
    Wait,
    Blocked(String),
}

impl Engine {
    /// Runs one phase; returns whether every step in it succeeded or was skipped by `when`.
    async fn run_phase(
        &mut self,
        phase: Phase,
        cancel: CancellationToken,
        stop: &CancellationToken,
    ) -> Result<bool, EngineError> {
        let order: Vec<usize> = self.plan.order(phase).collect();
        let mut tasks: JoinSet<(usize, TaskOutcome)> = JoinSet::new();
        let mut stopping = false;
        loop {
            if !stopping {
                // Starting a step can finish it at once (reused, skipped), which may make
                // more steps ready: repeat until nothing changes.
                let mut progressed = true;
                while progressed && tasks.len() < self.jobs {
                    progressed = false;
                    for &i in &order {
                        if tasks.len() >= self.jobs {
                            break;
                        }
                        if !matches!(self.status[i], Status::Pending) {
                            continue;
                        }
                        match self.readiness(i) {
                            Readiness::Wait => {}
                            Readiness::Blocked(reason) => {
                                self.finish_now(i, StepState::Skipped, false, reason)?;
                                progressed = true;
                            }
                            Readiness::Ready => {
                                self.start(i, &mut tasks, &cancel)?;
                                progressed = true;
                            }
                        }
                    }
                }
            }
            if tasks.is_empty() {
                break;
            }
            tokio::select! {
                joined = tasks.join_next() => {
                    let (i, outcome) = joined.expect("tasks is not empty").expect("step task panicked");
                    let failed = matches!(outcome, TaskOutcome::Failed { .. });
                    self.finish(i, outcome)?;
                    if failed && self.fail_fast && !stopping {
                        stopping = true;
                        self.reporter.event(&Event::Notice { text: "--fail-fast: a step failed; cancelling the others".into() });
                        cancel.cancel();
                    }
                }
                _ = stop.cancelled(), if !stopping => {
                    // Running steps see the cancellation through their own tokens.
                    stopping = true;
                }
            }
        }
        let reason = if stop.is_cancelled() {
            "not started: the run was interrupted"
        } else {
            "not started: --fail-fast"
        };
        let mut all_ok = true;
        for &i in &order {
            if matches!(self.status[i], Status::Pending) {
                self.finish_now(i, StepState::Skipped, false, reason.into())?;
            }
            if let Status::Done { satisfied, .. } = self.status[i] {
                all_ok &= satisfied;
            }
        }
        Ok(all_ok)
    }

    fn readiness(&self, i: usize) -> Readiness {
        for &d in &self.plan.steps[i].deps {
            match &self.status[d] {
                Status::Done {
                    satisfied: true, ..
                } => {}
                Status::Done { state, .. } => {
                    let dep = &self.plan.steps[d].id;
                    return Readiness::Blocked(format!("dependency `{dep}` {}", state.as_str()));
                }
                _ => return Readiness::Wait,
            }
        }
        Readiness::Ready
    }

    /// Outputs of the steps step `i` reads, for its template context.
    fn visible_outputs(&self, i: usize) -> IndexMap<String, Outputs> {
        self.plan.steps[i]
            .uses
            .iter()
            .filter_map(|u| {
                let id = &self.plan.steps[*u].id;
                self.outputs.get(id).map(|o| (id.clone(), o.clone()))
            })
            .collect()
    }

    fn render_error(&self, i: usize, e: crate::playbook::template::RenderError) -> String {
        let step = &self.plan.steps[i];
        let missing: Vec<&str> = step
            .uses
            .iter()
            .map(|u| self.plan.steps[*u].id.as_str())
            .filter(|id| !self.outputs.contains_key(*id))
            .collect();
        let field = if e.path.is_empty() {
            "with".to_string()
        } else {
            format!("with.{}", e.path)
        };
        let mut message = format!(
            "template error in `{field}`: {}",
            self.redactor.redact(&e.message)
        );
        if !missing.is_empty() {
            message.push_str(&format!(
                " (no outputs from: {}; skipped steps have none)",
                missing.join(", ")
            ));
        }
        message
    }

    fn start(
        &mut self,
        i: usize,
        tasks: &mut JoinSet<(usize, TaskOutcome)>,
        cancel: &CancellationToken,
    ) -> Result<(), EngineError> {
        let plan = self.plan.clone();
        let step = &plan.steps[i];
        let visible = self.visible_outputs(i);
        let real_ctx = plan.run_context(SecretValues::Real(&self.secrets), &visible, &self.run);
        if let Some(when) = &step.when {
            match self.templates.condition(when, &real_ctx) {
                Ok(true) => {}
                Ok(false) => {
                    return self.finish_now(
                        i,
                        StepState::Skipped,
                        true,
                        format!("`when` is false: {when}"),
                    );
                }
                Err(e) => {
                    let msg = format!("cannot evaluate `when`: {}", self.redactor.redact(&e));
                    return self.fail_now(i, FailureClass::Config, msg);
                }
            }
        }
        let marked_ctx = plan.run_context(SecretValues::Markers, &visible, &self.run);
        let inputs = match self.templates.render_json(&step.with, &marked_ctx) {
            Ok(v) => self.redactor.redact_json(&v),
            Err(e) => {
                let msg = self.render_error(i, e);
                return self.fail_now(i, FailureClass::Config, msg);
            }
        };
        let fp = fingerprint(step.kind.name, &inputs);
        let deps_reran = step
            .deps
            .iter()
            .chain(&step.uses)
            .any(|d| self.executed[*d]);
        if let Some((cfp, outputs)) = self.checkpoints.get(&step.id)
            && *cfp == fp
            && !deps_reran
        {
            let outputs = outputs.clone();
            self.journal.append_lazy(&Record::StepReused {
                step: step.id.clone(),
                fingerprint: fp,
                outputs: outputs.clone(),
                at: now(),
            })?;
            self.outputs.insert(step.id.clone(), outputs);
            self.status[i] = Status::Done {
                state: StepState::Reused,
                satisfied: true,
                attempts: 0,
                duration: Duration::ZERO,
                reason: Some("checkpoint reused (same inputs)".into()),
            };
            self.report_finished(i);
            return Ok(());
        }
        let real = match self.templates.render_json(&step.with, &real_ctx) {
            Ok(v) => v,
            Err(e) => {
                let msg = self.render_error(i, e);
                return self.fail_now(i, FailureClass::Config, msg);
            }
        };
        let config = match StepConfig::from_with(step.kind.name, real) {
            Ok(c) => c,
            Err(e) => {
                let at = crate::playbook::load::path_string("with", e.path());
                let msg = format!(
                    "invalid settings at `{at}`: {}",
                    self.redactor.redact(&e.into_inner().to_string())
                );
                return self.fail_now(i, FailureClass::Config, msg);
            }
        };
        self.journal.append(&Record::StepStarted {
            step: step.id.clone(),
            kind: step.kind.name.into(),
            attempt: 1,
            fingerprint: fp.clone(),
            inputs,
            at: now(),
        })?;
        self.executed[i] = true;
        self.status[i] = Status::Running;
        self.reporter.event(&Event::StepStarted {
            step: step.id.clone(),
            kind: step.kind.name.into(),
            attempt: 1,
        });
        let attempt = Attempt {
            step_id: step.id.clone(),
            fingerprint: fp,
            effect: step.kind.effect,
            timeout: step.timeout,
            retry: step.retry.clone(),
            config,
            run_id: self.run.id.clone(),
            journal: self.journal.clone(),
            reporter: self.reporter.clone(),
            redactor: self.redactor.clone(),
            work_dir: self.work_dir.clone(),
            base_dir: plan.base_dir.clone(),
            guards: self.guards.clone(),
        };
        let cancel = cancel.clone();
        tasks.spawn(async move { (i, attempt.run(cancel).await) });
        Ok(())
    }

    fn fail_now(
        &mut self,
        i: usize,
        class: FailureClass,
        message: String,
    ) -> Result<(), EngineError> {
        self.finish(
            i,
            TaskOutcome::Failed {
                error: StepError::new(class, message),
                attempts: 0,
                duration: Duration::ZERO,
            },
        )
    }

    /// Records a step that ends without running (skipped).
    fn finish_now(
        &mut self,
        i: usize,
        state: StepState,
        satisfied: bool,
        reason: String,
    ) -> Result<(), EngineError> {
        let id = self.plan.steps[i].id.clone();
        self.journal.append_lazy(&Record::StepSkipped {
            step: id,
            reason: reason.clone(),
            satisfied,
            at: now(),
        })?;
        self.status[i] = Status::Done {
            state,
            satisfied,
            attempts: 0,
            duration: Duration::ZERO,
            reason: Some(reason),
        };
        self.report_finished(i);
        Ok(())
    }

    fn finish(&mut self, i: usize, outcome: TaskOutcome) -> Result<(), EngineError> {
        let id = self.plan.steps[i].id.clone();
        let ms = |d: Duration| d.as_millis() as u64;
        self.status[i] = match outcome {
            TaskOutcome::Succeeded {
                outputs,
                attempts,
                duration,
                fingerprint,
            } => {
                self.journal.append(&Record::StepSucceeded {
                    step: id.clone(),
                    fingerprint,
                    outputs: outputs.clone(),
                    attempts,
                    duration_ms: ms(duration),
                    at: now(),
                })?;
                self.outputs.insert(id, outputs);
                Status::Done {
                    state: StepState::Succeeded,
                    satisfied: true,
                    attempts,
                    duration,
                    reason: None,
                }
            }
            TaskOutcome::Failed {
                error,
                attempts,
                duration,
                ..
            } => {
                self.journal.append(&Record::StepFailed {
                    step: id,
                    class: error.class,
                    error: error.message.clone(),
                    attempts,
                    duration_ms: ms(duration),
                    at: now(),
                })?;
                Status::Done {
                    state: StepState::Failed,
                    satisfied: false,
                    attempts,
                    duration,
                    reason: Some(error.message),
                }
            }
            TaskOutcome::Cancelled { attempts, duration } => {
                self.journal.append(&Record::StepCancelled {
                    step: id,
                    attempts,
                    duration_ms: ms(duration),
                    at: now(),
                })?;
                Status::Done {
                    state: StepState::Cancelled,
                    satisfied: false,
                    attempts,
                    duration,
                    reason: Some("cancelled".into()),
                }
            }
        };
        self.report_finished(i);
        Ok(())
    }

    fn report_finished(&self, i: usize) {
        if let Status::Done {
            state,
            attempts,
            duration,
            reason,
            ..
        } = &self.status[i]
        {
            self.reporter.event(&Event::StepFinished {
                step: self.plan.steps[i].id.clone(),
                state: *state,
                attempts: *attempts,
                duration_ms: duration.as_millis() as u64,
                reason: reason.clone(),
            });
        }
    }

    fn summary(&self) -> Vec<SummaryRow> {
        let mut rows = Vec::new();
        for phase in [Phase::Main, Phase::Finally] {
            for i in self.plan.order(phase) {
                let step = &self.plan.steps[i];
                let (state, attempts, duration, reason) = match &self.status[i] {
                    Status::Done {
                        state,
                        attempts,
                        duration,
                        reason,
                        ..
                    } => (*state, *attempts, *duration, reason.clone()),
                    Status::Running => (StepState::Running, 0, Duration::ZERO, None),
                    Status::Pending => (StepState::Pending, 0, Duration::ZERO, None),
                };
                rows.push(SummaryRow {
                    step: step.id.clone(),
                    kind: step.kind.name.into(),
                    state,
                    attempts,
                    duration_ms: duration.as_millis() as u64,
                    reason,
                });
            }
        }
        rows
    }
}
