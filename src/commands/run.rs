//! `drrun run` / `drrun PLAYBOOK` and `drrun resume`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;

use super::{compile_options, load_plan};
use crate::cli::{Output, ResumeArgs, RunArgs, StateArgs};
use crate::error::{EXIT_FAILED, EXIT_INTERRUPTED, Error};
use crate::exec::{Resume, RunOptions, RunStatus, signals};
use crate::plan::Plan;
use crate::report::Reporter;
use crate::report::printer::Printer;
use crate::state::StateError;
use crate::state::journal::{self, Record};
use crate::state::runs::{StateDir, default_state_dir};

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let opts = compile_options(&args.vars)?;
    let plan = load_plan(&args.playbook, &args.vars)?;
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| default_state_dir(&args.playbook));
    let resume = if args.resume {
        Resume::Newest
    } else {
        Resume::No
    };
    let opts = RunOptions {
        state_dir,
        jobs: args.jobs,
        fail_fast: args.fail_fast,
        resume,
        overrides: opts.var_overrides.into_iter().collect(),
        report_dir: args.report.clone(),
    };
    execute(plan, opts, args.output)
}

pub fn resume(args: ResumeArgs) -> Result<ExitCode> {
    let (state_dir, run_id) = find_run(&args.state, args.run_id.as_deref(), true)?;
    let state = StateDir::new(&state_dir);
    let replay = journal::read(&state.journal_path(&run_id))?;
    let Some(Record::RunStarted {
        playbook,
        overrides,
        ..
    }) = replay.records.first()
    else {
        return Err(Error::Usage(format!("run {run_id} has no start record")).into());
    };
    let playbook = args
        .state
        .playbook
        .clone()
        .unwrap_or_else(|| PathBuf::from(playbook));
    let mut vars = args.vars.clone();
    if vars.vars.is_empty() && vars.vars_files.is_empty() {
        // Resume with the same command-line overrides the run started with.
        vars.vars = overrides
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
    let plan = load_plan(&playbook, &vars)?;
    let opts = RunOptions {
        state_dir,
        jobs: args.jobs,
        fail_fast: args.fail_fast,
        resume: Resume::Id(run_id),
        overrides: opts.var_overrides.into_iter().collect(),
        report_dir: args.report.clone(),
    };
    execute(plan, opts, args.output)
}

fn execute(plan: Plan, opts: RunOptions, output: Output) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let printer: Arc<dyn Reporter> = Arc::new(Printer::new(output == Output::Json));
    let outcome = runtime.block_on(async {
        let stop = tokio_util::sync::CancellationToken::new();
        signals::install(stop.clone(), printer.clone())
            .map_err(|e| Error::Usage(format!("cannot install signal handlers: {e}")))?;
        crate::exec::run(Arc::new(plan), opts, printer.clone(), stop)
            .await
            .map_err(Error::from)
    })?;
    // Steps may have left cancelled children waiting on pipes: do not wait for them.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    Ok(match outcome.status {
        RunStatus::Passed => ExitCode::SUCCESS,
        RunStatus::Failed => ExitCode::from(EXIT_FAILED),
        RunStatus::Interrupted => ExitCode::from(EXIT_INTERRUPTED),
    })
}

/// Finds the state directory and run: by `--state-dir`, by `--playbook`, or by looking
/// through `.drrun/*/` and `*/.drrun/*/` under the current directory.
pub fn find_run(
    state: &StateArgs,
    run_id: Option<&str>,
    resumable: bool,
) -> Result<(PathBuf, String), Error> {
    let dirs = candidate_dirs(state);
    let mut best: Option<(String, PathBuf)> = None;
    for dir in &dirs {
        let sd = StateDir::new(dir);
        if let Some(id) = run_id {
            if sd.journal_path(id).exists() {
                return Ok((dir.clone(), id.to_string()));
            }
            continue;
        }
        let found = if resumable {
            match sd.newest_resumable() {
                Ok(s) => Some(s.run_id),
                Err(StateError::NothingToResume(_)) => None,
                Err(e) => return Err(e.into()),
            }
        } else {
            sd.list()?.pop()
        };
        if let Some(id) = found
            && best.as_ref().is_none_or(|(b, _)| id > *b)
        {
            best = Some((id, dir.clone()));
        }
    }
    match (best, run_id) {
        (Some((id, dir)), _) => Ok((dir, id)),
        (None, Some(id)) => Err(StateError::NoSuchRun(id.to_string()).into()),
        (None, None) if resumable => Err(StateError::NothingToResume(format!(
            "no unfinished run in {}",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into()),
        (None, None) => Err(Error::Usage(
            "no runs found; pass --playbook or --state-dir".into(),
        )),
    }
}

fn candidate_dirs(state: &StateArgs) -> Vec<PathBuf> {
    if let Some(dir) = &state.state_dir {
        return vec![dir.clone()];
    }
    if let Some(playbook) = &state.playbook {
        return vec![default_state_dir(playbook)];
    }
    let mut dirs = Vec::new();
    let mut scan = |root: &Path| {
        if let Ok(entries) = std::fs::read_dir(root.join(".drrun")) {
            dirs.extend(
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.join("runs").is_dir()),
            );
        }
    };
    scan(Path::new("."));
    if let Ok(entries) = std::fs::read_dir(".") {
        for e in entries.filter_map(|e| e.ok()).filter(|e| e.path().is_dir()) {
            scan(&e.path());
        }
    }
    dirs.sort();
    dirs
}
