//! `drrun status --state STORE` (the fleet view): one line a playbook in the store: its
//! last drill and how it went, RTO and RPO against the objectives, when it ran, and
//! whether it is overdue against how often it must pass (`objectives.every`, or
//! `--every`). A cron that only reports failures looks healthy when it stops running;
//! this says so, and exits 1, so it can be the alert check itself.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::state::LEASE_COPY;
use crate::cli::{Output, StatusArgs};
use crate::duration::human_days;
use crate::error::EXIT_FAILED;
use crate::outcome::RunStatus;
use crate::report::model::DrillReport;
use crate::report::printer::out;
use crate::state::journal;
use crate::state::runs::StateDir;

/// One playbook's line.
#[derive(Debug, Serialize)]
struct Row {
    playbook: String,
    /// `passed`, `failed`, `interrupted`, `running`, `unfinished` (cut off, nothing
    /// holds its lease), or `never` (no runs).
    status: String,
    run_id: Option<String>,
    started_at: Option<String>,
    /// RTO and RPO of the last drill: measured, objective, and the verdict in words.
    rto: Option<Objective>,
    rpo: Option<Objective>,
    last_passed_at: Option<String>,
    /// How often a drill must pass, if known.
    every_ms: Option<u64>,
    overdue: bool,
    /// Why it is overdue (or `never passed`).
    overdue_reason: Option<String>,
}

#[derive(Debug, Serialize)]
struct Objective {
    measured_ms: Option<u64>,
    target_ms: Option<u64>,
    met: Option<bool>,
    text: String,
}

fn objective(m: &crate::report::model::Measure, name: &str) -> Objective {
    Objective {
        measured_ms: m.measured_ms,
        target_ms: m.target_ms,
        met: m.met,
        text: m.headline(name),
    }
}

fn row(dir: &Path, every: Option<Duration>, now: DateTime<Utc>) -> Result<Row> {
    let playbook = dir
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().to_string());
    let state = StateDir::new(dir);
    let mut reports = Vec::new();
    for id in state.list()? {
        let records = journal::read(&state.journal_path(&id))?.records;
        if let Some(r) = DrillReport::from_records(&records) {
            let every_objective = records.iter().rev().find_map(|r| match r {
                journal::Record::RunStarted { objectives, .. }
                | journal::Record::Resumed { objectives, .. } => Some(objectives.every),
                _ => None,
            });
            reports.push((r, every_objective.flatten().map(|e| e.0)));
        }
    }
    // Run ids sort by the second only: order by when they started.
    reports.sort_by(|a, b| a.0.started_at.cmp(&b.0.started_at));
    let every = every.or_else(|| reports.last().and_then(|(_, e)| *e));
    let last_passed = reports
        .iter()
        .rev()
        .find(|(r, _)| r.status == RunStatus::Passed)
        .map(|(r, _)| r.started_at.clone());
    let (overdue, overdue_reason) = match (&last_passed, every) {
        (None, _) => (true, Some("never passed".to_string())),
        (Some(at), Some(every)) => {
            let age = DateTime::parse_from_rfc3339(at)
                .map(|t| (now - t.with_timezone(&Utc)).to_std().unwrap_or_default())
                .unwrap_or_default();
            if age > every {
                (
                    true,
                    Some(format!(
                        "last passed {} ago, due every {}",
                        human_days(age),
                        human_days(every)
                    )),
                )
            } else {
                (false, None)
            }
        }
        (Some(_), None) => (false, None),
    };
    let Some((last, _)) = reports.last() else {
        return Ok(Row {
            playbook,
            status: "never".into(),
            run_id: None,
            started_at: None,
            rto: None,
            rpo: None,
            last_passed_at: None,
            every_ms: every.map(|e| e.as_millis() as u64),
            overdue,
            overdue_reason,
        });
    };
    let status = match last.status {
        RunStatus::Unfinished if lease_holds(dir, &last.run_id, now) => "running".to_string(),
        s => s.as_str().to_string(),
    };
    Ok(Row {
        playbook,
        status,
        run_id: Some(last.run_id.clone()),
        started_at: Some(last.started_at.clone()),
        rto: Some(objective(&last.rto, "RTO")),
        rpo: Some(objective(&last.rpo, "RPO")),
        last_passed_at: last_passed,
        every_ms: every.map(|e| e.as_millis() as u64),
        overdue,
        overdue_reason,
    })
}

/// Whether the store's lease (copied next to the runs) is live and names `run_id`.
fn lease_holds(dir: &Path, run_id: &str, now: DateTime<Utc>) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join(LEASE_COPY)) else {
        return false;
    };
    let Ok(lease) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    let live = lease["expires_at"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|t| t.with_timezone(&Utc) > now);
    live && lease["run_id"].as_str() == Some(run_id)
}

pub(super) fn fleet(args: &StatusArgs, dirs: &[std::path::PathBuf]) -> Result<ExitCode> {
    let now = Utc::now();
    let rows: Vec<Row> = dirs
        .iter()
        .map(|d| row(d, args.every, now))
        .collect::<Result<_>>()?;
    let bad = rows
        .iter()
        .any(|r| r.overdue || matches!(r.status.as_str(), "failed" | "interrupted" | "unfinished"));
    match args.output {
        Output::Json => out(&serde_json::to_string_pretty(&rows)?),
        Output::Human => {
            let w = rows
                .iter()
                .map(|r| r.playbook.len())
                .max()
                .unwrap_or(8)
                .max(8);
            let mut text = format!(
                "{:w$}  {:11}  {:>9}  {:22}  DUE\n",
                "PLAYBOOK", "LAST DRILL", "AGO", "RUN"
            );
            for r in &rows {
                let ago = r
                    .started_at
                    .as_deref()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map_or_else(
                        || "-".into(),
                        |t| human_days((now - t.with_timezone(&Utc)).to_std().unwrap_or_default()),
                    );
                let due = match (&r.overdue_reason, r.every_ms) {
                    (Some(why), _) => format!("OVERDUE: {why}"),
                    (None, Some(ms)) => {
                        format!("ok (every {})", human_days(Duration::from_millis(ms)))
                    }
                    (None, None) => "-".into(),
                };
                text.push_str(&format!(
                    "{:w$}  {:11}  {:>9}  {:22}  {due}\n",
                    r.playbook,
                    r.status,
                    ago,
                    r.run_id.as_deref().unwrap_or("-"),
                ));
                for o in [&r.rto, &r.rpo].into_iter().flatten() {
                    text.push_str(&format!("{:w$}  {}\n", "", o.text));
                }
            }
            out(text.trim_end());
        }
    }
    Ok(if bad {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}
