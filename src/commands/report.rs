//! `drrun report [RUN_ID]`: print a run's drill report again, rebuilt from its journal.

use std::process::ExitCode;

use anyhow::Result;

use super::find_run;
use crate::cli::{ReportArgs, ReportFormat};
use crate::error::Error;
use crate::report::model::DrillReport;
use crate::report::printer::out;
use crate::report::{junit, markdown};
use crate::state::journal;
use crate::state::runs::StateDir;

pub(super) fn report(args: ReportArgs) -> Result<ExitCode> {
    let looked = super::look(&args.state)?;
    let (dir, run_id) = find_run(&looked, args.run_id.as_deref(), false)?;
    let state = StateDir::new(&dir);
    let replay = journal::read(&state.journal_path(&run_id))?;
    let mut report = DrillReport::from_records(&replay.records)
        .ok_or_else(|| Error::Usage(format!("run {run_id} has no start record")))?;
    report.history = Some(crate::report::history::compare(
        &report,
        &crate::report::history::earlier(&state, &report),
    ));
    let text = match args.format {
        ReportFormat::Md => markdown::render(&report),
        ReportFormat::Json => serde_json::to_string_pretty(&report)?,
        ReportFormat::Junit => junit::render(&report),
    };
    out(text.trim_end());
    Ok(ExitCode::SUCCESS)
}
