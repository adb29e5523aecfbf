//! `drrun run` / `drrun PLAYBOOK` and `drrun resume`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;

use super::{compile_options, find_run, load_plan};
use crate::cli::{Output, ResumeArgs, RunArgs, ShowArgs};
use crate::error::{EXIT_FAILED, Error};
use crate::events::Reporter;
use crate::exec::{Resume, RunOptions, signals};
use crate::outcome::RunStatus;
use crate::plan::Plan;
use crate::report::printer::{Printer, PrinterOptions};
use crate::state::history::RunHistory;
use crate::state::journal;
use crate::state::runs::StateDir;

pub(super) fn run(args: RunArgs) -> Result<ExitCode> {
    let opts = compile_options(&args.vars)?;
    let plan = load_plan(&args.playbook, &opts)?;
    let state = super::state::run_state(
        args.state.as_deref(),
        args.state_dir.as_deref(),
        &args.playbook,
    )?;
    let resume = match (args.resume, args.resume_interrupted) {
        (true, _) => Resume::Newest,
        (false, Some(max_age)) => Resume::IfInterrupted(max_age),
        (false, None) => Resume::No,
    };
    if let Some(step) = &args.break_step
        && !plan.steps.iter().any(|s| &s.id == step)
    {
        let hint = crate::diag::did_you_mean(step, plan.steps.iter().map(|s| s.id.as_str()))
            .map(|h| format!("; {h}"))
            .unwrap_or_default();
        return Err(Error::Usage(format!(
            "--break {step}: {} has no step `{step}`{hint}",
            args.playbook.display()
        ))
        .into());
    }
    let opts = RunOptions {
        state,
        break_step: args.break_step.clone(),
        jobs: args.jobs,
        fail_fast: args.fail_fast,
        resume,
        overrides: opts.var_overrides.into_iter().collect(),
        report_dir: args.report.clone(),
        lease_wait: args.lease_wait.unwrap_or_default(),
        metrics: crate::exec::MetricsOptions {
            textfile: args.metrics.metrics_textfile.clone(),
            pushgateway: args.metrics.pushgateway.clone(),
        },
    };
    execute(plan, opts, args.output, &args.show)
}

pub(super) fn resume(args: ResumeArgs) -> Result<ExitCode> {
    let looked = super::look(&args.state)?;
    let (state_dir, run_id) = find_run(&looked, args.run_id.as_deref(), true)?;
    let state = StateDir::new(&state_dir);
    let replay = journal::read(&state.journal_path(&run_id))?;
    let Some(history) = RunHistory::replay(&replay.records) else {
        return Err(Error::Usage(format!("run {run_id} has no start record")).into());
    };
    let playbook = args
        .state
        .playbook
        .clone()
        .unwrap_or_else(|| PathBuf::from(&history.playbook));
    let mut vars = args.vars.clone();
    if vars.vars.is_empty() && vars.vars_files.is_empty() {
        // Resume with the same command-line overrides the run started with.
        vars.vars = history
            .overrides
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                )
            })
            .collect();
    }
    let opts = compile_options(&vars)?;
    let plan = load_plan(&playbook, &opts)?;
    // With an S3 store, the run is continued in the store (under its lease), not in
    // the mirror it was found in.
    let state = match looked.store.as_ref().and_then(|s| s.s3.as_ref()) {
        Some(loc) => {
            let name = state_dir
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            super::state::s3_run_state(&loc.join(&name))?
        }
        None => state,
    };
    let opts = RunOptions {
        state,
        break_step: None,
        jobs: args.jobs,
        fail_fast: args.fail_fast,
        resume: Resume::Id(run_id),
        overrides: opts.var_overrides.into_iter().collect(),
        report_dir: args.report.clone(),
        lease_wait: args.lease_wait.unwrap_or_default(),
        metrics: crate::exec::MetricsOptions {
            textfile: args.metrics.metrics_textfile.clone(),
            pushgateway: args.metrics.pushgateway.clone(),
        },
    };
    execute(plan, opts, args.output, &args.show)
}

fn execute(plan: Plan, opts: RunOptions, output: Output, show: &ShowArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let printer: Arc<dyn Reporter> = Arc::new(Printer::new(PrinterOptions {
        json: output == Output::Json,
        verbose: show.verbose,
        progress_every: show.progress_every,
    }));
    let outcome = runtime.block_on(async {
        let stop = tokio_util::sync::CancellationToken::new();
        signals::install(stop.clone(), printer.clone(), show.stop_grace)
            .map_err(|e| Error::Usage(format!("cannot install signal handlers: {e}")))?;
        crate::exec::run(Arc::new(plan), opts, printer.clone(), stop)
            .await
            .map_err(Error::from)
    })?;
    // Steps may have left cancelled children waiting on pipes: do not wait for them.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    Ok(match outcome {
        RunStatus::Passed => ExitCode::SUCCESS,
        RunStatus::Failed => ExitCode::from(EXIT_FAILED),
        RunStatus::Interrupted => ExitCode::from(signals::exit_code()),
        // A run that returns has finished one way or another.
        RunStatus::Unfinished => ExitCode::from(EXIT_FAILED),
    })
}
