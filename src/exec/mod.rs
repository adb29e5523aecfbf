//! The engine: runs a [`Plan`] as a DAG on tokio, journaling every state change first.
//!
//! A run is opened ([`session`]: the lock, a new run or the one resumed), its phases are
//! run ([`engine`]: the scheduler, [`attempt`]: one step's attempts), and it is finished
//! ([`finish`]: the objective verdict and the report files).

mod attempt;
mod engine;
mod finish;
mod metrics;
mod notify;
mod session;
pub(crate) mod signals;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::events::{Event, Reporter};
use crate::outcome::RunStatus;
use crate::plan::{Phase, Plan};
use crate::secrets::SecretError;
use crate::state::StateError;
use crate::state::journal::{Record, now};
use engine::Engine;

/// Which run to continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resume {
    /// Start a new run.
    No,
    /// Continue the newest run that did not pass.
    Newest,
    /// Continue this run.
    Id(String),
    /// Continue the newest run when it was interrupted or cut off (no `run_finished`)
    /// and its last record is younger than this; otherwise start a new run. What a
    /// scheduled run does, so the next pod picks up where an evicted one stopped.
    IfInterrupted(std::time::Duration),
}

#[derive(Debug, Clone)]
pub(crate) struct RunOptions {
    /// Where the runs are kept (a directory, or the local mirror of an S3 store).
    pub state: crate::state::runs::StateDir,
    pub jobs: usize,
    pub fail_fast: bool,
    /// `--break STEP`: that step fails on purpose as it starts (a drill self-test).
    pub break_step: Option<String>,
    pub resume: Resume,
    /// Command-line var overrides, recorded so `drrun resume` can reuse them.
    pub overrides: serde_json::Map<String, serde_json::Value>,
    /// `--report DIR`: where else to write the drill report.
    pub report_dir: Option<PathBuf>,
    /// How long to wait for another run's lease on S3 state.
    pub lease_wait: std::time::Duration,
    /// Where the drill's metrics go when it ends.
    pub metrics: MetricsOptions,
}

/// `--metrics-textfile` and `--pushgateway`.
#[derive(Debug, Clone, Default)]
pub(crate) struct MetricsOptions {
    pub textfile: Option<PathBuf>,
    pub pushgateway: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum EngineError {
    #[error(transparent)]
    State(#[from] StateError),
    /// Every secret that could not be read; nothing was started.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Secrets(Vec<SecretError>),
    /// What the guards refused, found before the first step; nothing was started.
    #[error("{}", .0.join("\n"))]
    Refused(Vec<String>),
}

/// Runs `plan` to the end (or to interruption). `stop` is cancelled by the first Ctrl-C.
pub(crate) async fn run(
    plan: Arc<Plan>,
    opts: RunOptions,
    reporter: Arc<dyn Reporter>,
    stop: CancellationToken,
) -> Result<RunStatus, EngineError> {
    let started = Instant::now();
    let session = session::open(&plan, &opts, reporter.as_ref())?;
    reporter.event(&Event::RunStarted {
        run_id: session.run_id.clone(),
        playbook: plan.file.display().to_string(),
        resumed: session.resumed,
        steps: plan.steps.len(),
    });
    let notifier = notify::Notifier::new(&plan, &session.secrets);
    if let Some(n) = &notifier {
        n.started(reporter.as_ref()).await;
    }
    let mut engine = Engine::new(plan.clone(), &session, &opts, reporter.clone());

    let main_ok = engine
        .run_phase(Phase::Main, stop.child_token(), &stop)
        .await?;
    let interrupted = stop.is_cancelled();
    if interrupted {
        engine.journal().append(&Record::Interrupted {
            signal: signals::received().unwrap_or("a signal").into(),
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
    engine.set_run_status(main_status);
    let finally_ok = if plan.finally_levels.is_empty() {
        true
    } else {
        engine.journal().append(&Record::PhaseStarted {
            phase: "finally".into(),
            at: now(),
        })?;
        reporter.event(&Event::PhaseStarted {
            phase: "finally".into(),
        });
        signals::entering_finally();
        // `finally` must run even after Ctrl-C, so it gets a token the first signal does not cancel.
        engine
            .run_phase(
                Phase::Finally,
                CancellationToken::new(),
                &CancellationToken::new(),
            )
            .await?
    };
    // A signal during `finally` lets it finish, but the run was interrupted all the same.
    let late_signal = !interrupted && stop.is_cancelled();
    if late_signal {
        engine.journal().append(&Record::Interrupted {
            signal: signals::received().unwrap_or("a signal").into(),
            at: now(),
        })?;
    }
    let status = match main_status {
        _ if late_signal => RunStatus::Interrupted,
        RunStatus::Passed if !finally_ok => RunStatus::Failed,
        s => s,
    };
    let summary = engine.summary();
    let (finished, report) =
        finish::conclude(&session, &opts, status, started, summary, reporter.as_ref())?;
    if let Some(report) = &report {
        metrics::publish(&session.state, &opts.metrics, report, reporter.as_ref()).await;
    }
    if let Some(n) = &notifier {
        let exit_code = match finished {
            RunStatus::Passed => 0,
            RunStatus::Interrupted => signals::exit_code(),
            _ => crate::error::EXIT_FAILED,
        };
        let report_at = match &session.state.remote {
            Some(store) => format!("{}/runs/{}/report.md", store.url(), session.run_id),
            None => {
                let path = session.state.run_dir(&session.run_id).join("report.md");
                std::fs::canonicalize(&path)
                    .unwrap_or(path)
                    .display()
                    .to_string()
            }
        };
        let end = notify::Ending {
            status: finished,
            exit_code,
            report: report.as_ref(),
            report_at,
        };
        n.ended(&end, reporter.as_ref()).await;
    }
    drop(session);
    Ok(finished)
}
