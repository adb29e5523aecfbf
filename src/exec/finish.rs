//! Finishing a run: the objective verdict (a drill whose steps all passed still fails
//! when it missed an objective), the `run_finished` record, and the report files.

use std::time::Instant;

use super::session::Session;
use super::{EngineError, RunOptions};
use crate::events::{Event, Reporter, SummaryRow};
use crate::outcome::RunStatus;
use crate::report::model::DrillReport;
use crate::state::journal::{self, Record, now};

pub(super) fn conclude(
    session: &Session,
    opts: &RunOptions,
    status: RunStatus,
    started: Instant,
    summary: Vec<SummaryRow>,
    reporter: &dyn Reporter,
) -> Result<(RunStatus, Option<DrillReport>), EngineError> {
    let state = &session.state;
    let run_id = &session.run_id;
    // The report is built from the journal alone; read it once and add the last record.
    let mut records = journal::read(&state.journal_path(run_id))?.records;
    let measured = DrillReport::from_records(&records);
    let status = match status {
        RunStatus::Passed if measured.as_ref().is_some_and(DrillReport::objective_missed) => {
            RunStatus::Failed
        }
        s => s,
    };
    let duration = started.elapsed();
    let finished = Record::RunFinished {
        status,
        duration_ms: duration.as_millis() as u64,
        at: now(),
    };
    session.journal.append(&finished)?;
    records.push(finished);
    let report = DrillReport::from_records(&records).map(|mut r| {
        let history =
            crate::report::history::compare(&r, &crate::report::history::earlier(state, &r));
        for w in &history.warnings {
            reporter.event(&Event::Notice {
                text: format!("history: {w}"),
            });
        }
        r.history = Some(history);
        r
    });
    let mut report_files = Vec::new();
    if let Some(report) = &report {
        let dirs = std::iter::once(state.run_dir(run_id)).chain(opts.report_dir.clone());
        for dir in dirs {
            match crate::report::write_files(report, &dir) {
                Ok(files) => report_files.extend(files),
                Err(e) => reporter.event(&Event::Notice {
                    text: format!("could not write the drill report to {}: {e}", dir.display()),
                }),
            }
        }
    }
    // The journal is in the store record by record already; the report and the step
    // logs go there now, so `report` and an auditor can read them from any machine.
    if let Some(store) = &state.remote {
        for problem in store.upload_run_files(run_id, &state.run_dir(run_id)) {
            reporter.event(&Event::Notice {
                text: format!("could not keep the report in the state store: {problem}"),
            });
        }
    }
    reporter.event(&Event::RunFinished {
        run_id: run_id.clone(),
        status,
        duration_ms: duration.as_millis() as u64,
        summary,
        objectives: report
            .as_ref()
            .map(DrillReport::verdicts)
            .unwrap_or_default(),
        report: report_files
            .iter()
            .find(|p| p.extension().is_some_and(|e| e == "md"))
            .map(|p| p.display().to_string()),
    });
    Ok((status, report))
}
