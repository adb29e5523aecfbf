//! The scheduler: starts every step whose dependencies are done (up to `jobs` at once),
//! reuses checkpoints whose fingerprint still matches, journals each change before acting
//! on it, and skips the dependents of a step that did not succeed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::attempt::{Attempt, TaskOutcome};
use super::session::Session;
use super::{EngineError, RunOptions};
use crate::events::{Event, Reporter, SummaryRow};
use crate::outcome::{Failure, FailureClass, Outputs, RunStatus, StepState};
use crate::plan::context::{RunInfo, SecretValues};
use crate::plan::{Phase, Plan};
use crate::playbook::template::Templates;
use crate::secrets::Redactor;
use crate::state::fingerprint::fingerprint;
use crate::state::journal::{Journal, Record, now};
use crate::steps::guard::Guards;
use crate::steps::{Deferrals, StepConfig};

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

enum Readiness {
    Ready,
    Wait,
    Blocked(String),
}

pub(super) struct Engine {
    plan: Arc<Plan>,
    journal: Arc<Journal>,
    reporter: Arc<dyn Reporter>,
    secrets: IndexMap<String, String>,
    redactor: Arc<Redactor>,
    templates: Templates,
    run: RunInfo,
    work_dir: PathBuf,
    /// With S3 state: the store, which keeps each step's log once the step ends.
    store: Option<Arc<crate::state::s3::S3State>>,
    /// Shared by every step's context (built once, not per step).
    guards: Arc<Guards>,
    jobs: usize,
    fail_fast: bool,
    /// `--break STEP`.
    break_step: Option<String>,
    /// Checkpoints from earlier sessions of this run: step -> (fingerprint, outputs).
    checkpoints: HashMap<String, (String, Outputs)>,
    /// Steps an earlier session of this run left unfinished or cancelled.
    cut_short: Vec<String>,
    status: Vec<Status>,
    outputs: IndexMap<String, Outputs>,
    /// Executed (not reused) in this session; its dependents may not reuse checkpoints.
    executed: Vec<bool>,
}

impl Engine {
    pub(super) fn new(
        plan: Arc<Plan>,
        session: &Session,
        opts: &RunOptions,
        reporter: Arc<dyn Reporter>,
    ) -> Self {
        let n = plan.steps.len();
        Self {
            journal: session.journal.clone(),
            reporter,
            secrets: session.secrets.clone(),
            redactor: session.redactor.clone(),
            templates: Templates::new(),
            run: RunInfo {
                id: session.run_id.clone(),
                started_at: session.started_at.clone(),
                dry_run: false,
                playbook: plan.file.display().to_string(),
                status: "running".into(),
            },
            work_dir: session.state.run_dir(&session.run_id).join("work"),
            store: session.state.remote.clone(),
            guards: Arc::new(plan.guards.clone()),
            jobs: opts.jobs.max(1),
            fail_fast: opts.fail_fast,
            break_step: opts.break_step.clone(),
            checkpoints: session.checkpoints.clone(),
            cut_short: session.cut_short.clone(),
            status: (0..n).map(|_| Status::Pending).collect(),
            outputs: IndexMap::new(),
            executed: vec![false; n],
            plan,
        }
    }

    pub(super) fn journal(&self) -> &Journal {
        &self.journal
    }

    /// What `run.status` says to the `finally` steps.
    pub(super) fn set_run_status(&mut self, status: RunStatus) {
        self.run.status = status.as_str().into();
    }

    /// Runs one phase; returns whether every step in it succeeded or was skipped by `when`.
    pub(super) async fn run_phase(
        &mut self,
        phase: Phase,
        cancel: CancellationToken,
        stop: &CancellationToken,
    ) -> Result<bool, EngineError> {
        let order: Vec<usize> = self.plan.order(phase).collect();
        let mut tasks: JoinSet<(usize, TaskOutcome)> = JoinSet::new();
        // Which step each task runs, to know whose task panicked.
        let mut running: HashMap<tokio::task::Id, usize> = HashMap::new();
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
                                if let Some(id) = self.start(i, &mut tasks, &cancel)? {
                                    running.insert(id, i);
                                }
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
                joined = tasks.join_next_with_id() => {
                    let (i, outcome) = match joined.expect("tasks is not empty") {
                        Ok((_, (i, outcome))) => (i, outcome),
                        // A panic in a kind fails its step; the engine, `finally` and
                        // the journal go on.
                        Err(e) => {
                            let i = running.remove(&e.id()).expect("every task is registered");
                            (i, TaskOutcome::Failed {
                                error: Failure::new(FailureClass::Internal, panic_message(e)),
                                attempts: 1,
                                duration: Duration::ZERO,
                            })
                        }
                    };
                    running.retain(|_, step| *step != i);
                    let failed = matches!(outcome, TaskOutcome::Failed { .. });
                    self.finish(i, outcome)?;
                    if failed && self.fail_fast && !stopping {
                        stopping = true;
                        self.reporter.event(&Event::Notice { text: "--fail-fast: a step failed; cancelling the others".into() });
                        cancel.cancel();
                    }
                }
                () = stop.cancelled(), if !stopping => {
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
    ) -> Result<Option<tokio::task::Id>, EngineError> {
        let plan = self.plan.clone();
        let step = &plan.steps[i];
        let visible = self.visible_outputs(i);
        let real_ctx = plan.run_context(SecretValues::Real(&self.secrets), &visible, &self.run);
        if let Some(when) = &step.when {
            match self.templates.condition(when, &real_ctx) {
                Ok(true) => {}
                Ok(false) => {
                    self.finish_now(
                        i,
                        StepState::Skipped,
                        true,
                        format!("`when` is false: {when}"),
                    )?;
                    return Ok(None);
                }
                Err(e) => {
                    let msg = format!("cannot evaluate `when`: {}", self.redactor.redact(&e));
                    self.fail_now(i, FailureClass::Config, msg)?;
                    return Ok(None);
                }
            }
        }
        let marked_ctx = plan.run_context(SecretValues::Markers, &visible, &self.run);
        let inputs = match self.templates.render_json(&step.with, &marked_ctx) {
            Ok(v) => self.redactor.redact_json(&v),
            Err(e) => {
                let msg = self.render_error(i, e);
                self.fail_now(i, FailureClass::Config, msg)?;
                return Ok(None);
            }
        };
        let fp = fingerprint(step.kind.name, &inputs);
        let deps_reran = step
            .deps
            .iter()
            .chain(&step.uses)
            .any(|d| self.executed[*d]);
        // `finally` cleans up after *this* session (scales DR down after the deploy a
        // resume just made): it always runs, it is never reused from a checkpoint.
        // A checkpoint is reused only while what it says still holds (its kind checks:
        // the fetched file is still there, unchanged); otherwise the step runs again.
        let holds = |outputs: &Outputs| match step.kind.still_holds.map(|check| check(outputs)) {
            Some(Err(why)) => Err(why),
            _ => Ok(()),
        };
        let mut stale = None;
        if step.phase == Phase::Main
            && let Some((cfp, outputs)) = self.checkpoints.get(&step.id)
            && *cfp == fp
            && !deps_reran
            && let Err(why) = holds(outputs)
        {
            stale = Some(why);
        }
        if let Some(why) = &stale {
            self.reporter.event(&Event::StepNote {
                step: step.id.clone(),
                text: self.redactor.redact(&format!(
                    "checkpoint no longer holds ({why}): running the step again"
                )),
            });
        }
        if step.phase == Phase::Main
            && stale.is_none()
            && let Some((cfp, outputs)) = self.checkpoints.get(&step.id)
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
            return Ok(None);
        }
        let real = match self.templates.render_json(&step.with, &real_ctx) {
            Ok(v) => v,
            Err(e) => {
                let msg = self.render_error(i, e);
                self.fail_now(i, FailureClass::Config, msg)?;
                return Ok(None);
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
                self.fail_now(i, FailureClass::Config, msg)?;
                return Ok(None);
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
        if self.break_step.as_deref() == Some(step.id.as_str()) {
            // Started, then failed on purpose: what follows is the drill's reaction.
            let message = format!(
                "deliberate break (--break {}): the step was made to fail as it started, to show the drill goes red",
                step.id
            );
            self.finish(
                i,
                TaskOutcome::Failed {
                    error: Failure::new(FailureClass::Other, message),
                    attempts: 1,
                    duration: Duration::ZERO,
                },
            )?;
            return Ok(None);
        }
        let attempt = Attempt {
            step_id: step.id.clone(),
            fingerprint: fp,
            effect: step.effect,
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
            earlier_attempt: self.cut_short.contains(&step.id),
            deferred: Arc::new(Deferrals::new(
                real_ctx.clone(),
                self.templates.deferred_paths(&step.with, &real_ctx),
            )),
        };
        let cancel = cancel.clone();
        let handle = tasks.spawn(async move { (i, attempt.run(cancel).await) });
        Ok(Some(handle.id()))
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
                error: Failure::new(class, message),
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
            TaskOutcome::Cancelled {
                attempts,
                duration,
                left,
            } => {
                self.journal.append(&Record::StepCancelled {
                    step: id,
                    attempts,
                    duration_ms: ms(duration),
                    left: left.clone(),
                    at: now(),
                })?;
                Status::Done {
                    state: StepState::Cancelled,
                    satisfied: false,
                    attempts,
                    duration,
                    reason: Some(
                        left.map_or_else(|| "cancelled".into(), |l| format!("cancelled; {l}")),
                    ),
                }
            }
        };
        self.keep_log(i);
        self.report_finished(i);
        Ok(())
    }

    /// With S3 state, the ended step's log goes to the store.
    fn keep_log(&self, i: usize) {
        let Some(store) = &self.store else {
            return;
        };
        let step = &self.plan.steps[i].id;
        let path = crate::steps::step_log_path(&self.work_dir, step);
        let rel = format!("runs/{}/logs/{step}.log", self.run.id);
        if let Err(e) = store.upload_file(&path, &rel) {
            self.reporter.event(&Event::Notice {
                text: format!("could not keep the log of `{step}` in the state store: {e}"),
            });
        }
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

    pub(super) fn summary(&self) -> Vec<SummaryRow> {
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

/// What a panicking step task said.
fn panic_message(e: tokio::task::JoinError) -> String {
    if e.is_cancelled() {
        return "the step's task was cancelled".into();
    }
    let payload = e.into_panic();
    let text = payload
        .downcast_ref::<&str>()
        .map(ToString::to_string)
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    format!("internal error: the step panicked: {text}")
}
