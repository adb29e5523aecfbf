//! Opening a run: the state directory's lock, the secrets, and either a new run (its
//! first record) or the run being resumed (its checkpoints).

use std::collections::HashMap;
use std::sync::Arc;

use indexmap::IndexMap;

use super::{EngineError, Resume, RunOptions};
use crate::events::{Event, Reporter};
use crate::outcome::{Outputs, RunStatus, StepState};
use crate::plan::context::SecretValues;
use crate::plan::{Plan, Unknown};
use crate::playbook::template::Templates;
use crate::secrets::Redactor;
use crate::state::journal::{Journal, PlannedStep, Record, now};
use crate::state::lease::Lease;
use crate::state::lock::{Holder, StateLock};
use crate::state::runs::{StateDir, new_run_id};
use crate::state::{StateError, io_err};

/// A run that is open: its lock is held and its journal accepts records.
pub(super) struct Session {
    pub(super) state: StateDir,
    /// Held until the session is dropped.
    _lock: RunLock,
    pub(super) run_id: String,
    pub(super) journal: Arc<Journal>,
    /// Checkpoints from earlier sessions of this run: step -> (fingerprint, outputs).
    pub(super) checkpoints: HashMap<String, (String, Outputs)>,
    /// Steps an earlier session started and never finished (it died) or cancelled: what
    /// they ran may still be running somewhere.
    pub(super) cut_short: Vec<String>,
    pub(super) started_at: String,
    pub(super) resumed: bool,
    pub(super) secrets: IndexMap<String, String>,
    pub(super) redactor: Arc<Redactor>,
}

/// The state's lock: a `flock` on a local directory, a lease in an S3 store.
enum RunLock {
    Local(StateLock),
    Lease(Lease),
}

impl RunLock {
    fn acquire(
        state: &StateDir,
        holder: &Holder,
        wait: std::time::Duration,
    ) -> Result<(Self, Option<String>), StateError> {
        match &state.remote {
            None => StateLock::acquire(&state.root, holder).map(|(l, stale)| {
                (
                    Self::Local(l),
                    stale.map(|h| format!("{h}: that process is gone")),
                )
            }),
            Some(store) => {
                let (lease, stale) = Lease::acquire(store.clone(), holder, wait)?;
                // Only the lease holder writes the local mirror: pull it now.
                store.pull(&state.root)?;
                Ok((
                    Self::Lease(lease),
                    stale.map(|h| format!("{h}: it stopped renewing")),
                ))
            }
        }
    }

    fn write(&self, holder: &Holder) -> Result<(), StateError> {
        match self {
            Self::Local(l) => l.write(holder),
            Self::Lease(l) => l.write(holder),
        }
    }
}

/// The newest run, when it did not finish or was interrupted and its last record is
/// younger than `max_age`, with that age.
fn interrupted_run(
    state: &StateDir,
    max_age: std::time::Duration,
) -> Result<Option<(String, std::time::Duration)>, StateError> {
    let Some(id) = state.list()?.pop() else {
        return Ok(None);
    };
    let replay = crate::state::journal::read(&state.journal_path(&id))?;
    let summary = crate::state::runs::summarize(&id, &replay.records, replay.torn_tail);
    if !matches!(
        summary.status,
        RunStatus::Interrupted | RunStatus::Unfinished
    ) {
        return Ok(None);
    }
    let last = replay
        .records
        .last()
        .and_then(|r| chrono::DateTime::parse_from_rfc3339(r.at()).ok());
    let Some(last) = last else {
        return Ok(None);
    };
    let age = (chrono::Utc::now() - last.with_timezone(&chrono::Utc))
        .to_std()
        .unwrap_or_default();
    Ok((age <= max_age).then_some((id, age)))
}

/// Every step of the plan as the journal records it.
fn planned_steps(plan: &Plan) -> Vec<PlannedStep> {
    plan.steps
        .iter()
        .map(|s| PlannedStep {
            id: s.id.clone(),
            kind: s.kind.name.to_string(),
            phase: s.phase.section().to_string(),
        })
        .collect()
}

/// Checks the guards, with the secrets read, for every step whose touched settings are
/// known before the run (they depend on vars and secrets only, not on step outputs):
/// a database URL that points at production is refused here, before step 1, not half-way
/// through the drill. Returns every refusal.
fn preflight(plan: &Plan, secrets: &IndexMap<String, String>, redactor: &Redactor) -> Vec<String> {
    let templates = Templates::new();
    let ctx = plan.preview_context_with(SecretValues::Real(secrets), &IndexMap::new());
    let mut refused = Vec::new();
    for step in &plan.steps {
        let later: Vec<&str> = step
            .unknown
            .iter()
            .filter(|(_, u)| !matches!(u, Unknown::Secret))
            .map(|(path, _)| path.as_str())
            .collect();
        let Ok(rendered) = templates.render_json(&step.with, &ctx) else {
            continue;
        };
        let touches =
            (step.kind.check)(&rendered, &|_| false).map_or_else(|_| Vec::new(), |i| i.touches);
        for touch in touches {
            let known = touch
                .fields()
                .iter()
                .all(|f| !later.iter().any(|p| crate::util::paths_overlap(p, f)));
            if known && let Err(e) = plan.guards.check(&touch) {
                refused.push(format!(
                    "{}:{}: step `{}`: {}",
                    plan.file.display(),
                    step.line,
                    step.id,
                    redactor.redact(&e.message)
                ));
            }
        }
    }
    refused
}

pub(super) fn open(
    plan: &Plan,
    opts: &RunOptions,
    reporter: &dyn Reporter,
) -> Result<Session, EngineError> {
    let state = opts.state.clone();
    let mut holder = Holder {
        pid: std::process::id(),
        host: crate::util::hostname(),
        run_id: None,
        started_at: now(),
        playbook: plan.file.display().to_string(),
    };
    let (lock, stale) = RunLock::acquire(&state, &holder, opts.lease_wait)?;
    if let Some(old) = stale {
        reporter.event(&Event::Notice {
            text: format!("took over a stale lock left by {old}"),
        });
    }
    let secrets =
        crate::secrets::resolve(&plan.secrets, &plan.base_dir).map_err(EngineError::Secrets)?;
    let redactor = Arc::new(Redactor::new(
        secrets.iter().map(|(k, v)| (k.clone(), v.clone())),
    ));
    let refused = preflight(plan, &secrets, &redactor);
    if !refused.is_empty() {
        return Err(EngineError::Refused(refused));
    }

    let resume = match &opts.resume {
        Resume::IfInterrupted(max_age) => match interrupted_run(&state, *max_age)? {
            Some((id, age)) => {
                reporter.event(&Event::Notice {
                    text: format!(
                        "continuing run {id}, interrupted {} ago",
                        crate::duration::HumanDuration(age)
                    ),
                });
                Resume::Id(id)
            }
            None => Resume::No,
        },
        other => other.clone(),
    };
    let (run_id, journal, checkpoints, cut_short, started_at, resumed) = match &resume {
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
                drrun_version: concat!(env!("CARGO_PKG_VERSION"), " (", env!("DRRUN_COMMIT"), ")")
                    .to_string(),
                host: holder.host.clone(),
                user: crate::util::user_name(),
                service_account: crate::util::service_account(),
                break_step: opts.break_step.clone(),
                pid: holder.pid,
                at: at.clone(),
                vars: plan
                    .vars
                    .iter()
                    .map(|(k, v)| (k.clone(), redactor.redact_json(v)))
                    .collect(),
                overrides: opts.overrides.clone(),
                objectives: plan.objectives.clone(),
                steps: planned_steps(plan),
            };
            let journal = state.create_run(&run_id, &first)?;
            (run_id, journal, HashMap::new(), Vec::new(), at, false)
        }
        resume => {
            let summary = match resume {
                Resume::Id(id) => state.summary(id)?,
                _ => state.newest_resumable()?,
            };
            if summary.status == RunStatus::Passed {
                return Err(
                    StateError::NothingToResume(format!("run {} passed", summary.run_id)).into(),
                );
            }
            let journal = state.reopen_run(&summary.run_id)?;
            if summary.torn_tail {
                reporter.event(&Event::Notice {
                    text: "the journal ended in a torn record (the process died while writing it); it was ignored".into(),
                });
            }
            journal.append(&Record::Resumed {
                pid: holder.pid,
                at: now(),
                playbook_hash: plan.source_hash.clone(),
                objectives: plan.objectives.clone(),
                steps: planned_steps(plan),
            })?;
            // (`finally` steps are never reused: the engine decides that, per phase.)
            let checkpoints = summary
                .steps
                .iter()
                .filter(|(_, s)| s.state.is_success())
                .filter_map(|(id, s)| s.checkpoint.clone().map(|c| (id.clone(), c)))
                .collect();
            let cut_short = summary
                .steps
                .iter()
                .filter(|(_, s)| matches!(s.state, StepState::Running | StepState::Cancelled))
                .map(|(id, _)| id.clone())
                .collect();
            (
                summary.run_id.clone(),
                journal,
                checkpoints,
                cut_short,
                summary.started_at.clone(),
                true,
            )
        }
    };
    holder.run_id = Some(run_id.clone());
    lock.write(&holder)?;
    let work_dir = state.run_dir(&run_id).join("work");
    std::fs::create_dir_all(&work_dir).map_err(io_err(&work_dir))?;
    Ok(Session {
        state,
        _lock: lock,
        run_id,
        journal: Arc::new(journal),
        checkpoints,
        cut_short,
        started_at,
        resumed,
        secrets,
        redactor,
    })
}
