use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use super::find_run;
use crate::cli::{Output, StatusArgs};
use crate::duration::human;
use crate::report::printer::out;
use crate::state::runs::StateDir;

pub(super) fn status(args: StatusArgs) -> Result<ExitCode> {
    let (dir, _) = find_run(&args.state, args.run_id.as_deref(), false)?;
    let state = StateDir::new(&dir);
    if let Some(id) = args.run_id.as_deref() {
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
                out(&text);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut runs = Vec::new();
    for id in state.list()? {
        runs.push(state.summary(&id)?);
    }
    match args.output {
        Output::Json => out(&serde_json::to_string_pretty(&runs)?),
        Output::Human => {
            let mut text = format!("runs in {}:\n", dir.display());
            for r in &runs {
                let took = r
                    .duration_ms
                    .map(|d| human(Duration::from_millis(d)))
                    .unwrap_or_else(|| "-".into());
                text.push_str(&format!(
                    "  {}  {:11}  {:>8}  {}\n",
                    r.run_id, r.status, took, r.playbook_name
                ));
            }
            out(&text);
        }
    }
    Ok(ExitCode::SUCCESS)
}
