use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use super::{describe_dirs, find_run};
use crate::cli::{Output, StatusArgs};
use crate::duration::human;
use crate::error::Error;
use crate::report::printer::out;
use crate::state::runs::StateDir;
use crate::steps::step_log_path;

pub(super) fn status(args: StatusArgs) -> Result<ExitCode> {
    if let Some(step) = &args.log {
        return print_log(&args, step);
    }
    let Some(id) = args.run_id.as_deref() else {
        return list_runs(&args);
    };
    let looked = super::look(&args.state)?;
    let (dir, _) = find_run(&looked, Some(id), false)?;
    let state = StateDir::new(&dir);
    let summary = state.summary(id)?;
    match args.output {
        Output::Json => out(&serde_json::to_string_pretty(&summary)?),
        Output::Human => {
            let mut text = format!(
                "run {} of {} ({}): {}\nstarted {}{}\n\n",
                summary.run_id,
                summary.playbook_name,
                summary.playbook,
                summary.status,
                summary.started_at,
                summary
                    .finished_at
                    .as_deref()
                    .map(|f| format!(", finished {f}"))
                    .unwrap_or_default()
            );
            let w = summary
                .steps
                .keys()
                .map(String::len)
                .max()
                .unwrap_or(4)
                .max(4);
            text.push_str(&format!(
                "{:w$}  {:9}  {:>8}  {:>8}  NOTE\n",
                "STEP", "STATE", "ATTEMPTS", "TIME"
            ));
            for (step, s) in &summary.steps {
                text.push_str(&format!(
                    "{step:w$}  {:9}  {:>8}  {:>8}  {}\n",
                    s.state.as_str(),
                    s.attempts,
                    human(Duration::from_millis(s.duration_ms)),
                    s.reason.as_deref().unwrap_or("")
                ));
            }
            text.push_str(&format!("\nstate directory: {}\n", dir.display()));
            text.push_str(&format!(
                "step logs: {} (`drrun status {} --log STEP`)\n",
                state.run_dir(&summary.run_id).join("logs").display(),
                summary.run_id
            ));
            out(&text);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Every state directory found (`--state-dir`, `--playbook`'s, or `.drrun/*` here and one
/// level down) with the runs of each, newest last, naming the directories it read.
fn list_runs(args: &StatusArgs) -> Result<ExitCode> {
    let looked = super::look(&args.state)?;
    let dirs = &looked.dirs;
    if args.fleet || (args.state.state.is_some() && args.state.playbook.is_none()) {
        return super::fleet::fleet(args, dirs);
    }
    let mut found = Vec::new();
    for dir in dirs {
        let state = StateDir::new(dir);
        let mut runs = Vec::new();
        for id in state.list()? {
            runs.push(state.summary(&id)?);
        }
        found.push((dir, runs));
    }
    if found.iter().all(|(_, runs)| runs.is_empty()) {
        return Err(Error::Usage(format!(
            "no runs found: {}; pass --playbook, --state or --state-dir",
            describe_dirs(dirs)
        ))
        .into());
    }
    match args.output {
        Output::Json => {
            let value: Vec<serde_json::Value> = found
                .iter()
                .map(|(dir, runs)| serde_json::json!({ "state_dir": dir, "runs": runs }))
                .collect();
            out(&serde_json::to_string_pretty(&value)?);
        }
        Output::Human => {
            let mut text = String::new();
            for (dir, runs) in &found {
                text.push_str(&format!("runs in {}:\n", dir.display()));
                if runs.is_empty() {
                    text.push_str("  (none)\n");
                }
                for r in runs {
                    let took = r
                        .duration_ms
                        .map(|d| human(Duration::from_millis(d)))
                        .unwrap_or_else(|| "-".into());
                    text.push_str(&format!(
                        "  {}  {:11}  {:>8}  {}\n",
                        r.run_id, r.status, took, r.playbook_name
                    ));
                }
            }
            out(text.trim_end());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `status --log STEP`: what the step's programs printed in the run (default: the newest).
fn print_log(args: &StatusArgs, step: &str) -> Result<ExitCode> {
    let looked = super::look(&args.state)?;
    let (dir, id) = find_run(&looked, args.run_id.as_deref(), false)?;
    let state = StateDir::new(&dir);
    let path = step_log_path(&state.run_dir(&id).join("work"), step);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            out(&text);
            Ok(ExitCode::SUCCESS)
        }
        Err(_) => {
            let logs: Vec<String> = std::fs::read_dir(state.run_dir(&id).join("logs"))
                .map(|d| {
                    d.filter_map(Result::ok)
                        .filter_map(|e| e.file_name().into_string().ok())
                        .filter_map(|n| n.strip_suffix(".log").map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            Err(Error::Usage(format!(
                "run {id} has no log for step `{step}` ({}); steps with logs: {}",
                path.display(),
                if logs.is_empty() {
                    "none".into()
                } else {
                    logs.join(", ")
                }
            ))
            .into())
        }
    }
}
