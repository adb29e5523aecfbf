//! The drill as Prometheus metrics (text exposition format 0.0.4), for a node_exporter
//! textfile collector or a Pushgateway, grouped by playbook. Names follow Prometheus'
//! conventions: the `drrun_` prefix, base units (`_seconds`, `_bytes`), and
//! `_timestamp_seconds` for points in time. Every value comes from the report, which
//! comes from the journal; the last success comes from the state's earlier runs too, so a
//! failing drill does not erase when the last one passed.

use std::fmt::Write as _;

use super::model::DrillReport;
use crate::outcome::RunStatus;

/// What the state's earlier runs add.
#[derive(Debug, Default, Clone)]
pub(crate) struct Past {
    /// When the last passed drill finished (this one's included), as Unix seconds.
    pub last_success: Option<f64>,
}

fn seconds(rfc3339: &str) -> Option<f64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.timestamp_millis() as f64 / 1000.0)
}

/// `"` `\` and newlines escaped, as label values need.
fn label(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Text {
    out: String,
    playbook: String,
}

impl Text {
    fn family(&mut self, name: &str, help: &str, samples: &[(&[(&str, &str)], f64)]) {
        if samples.is_empty() {
            return;
        }
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} gauge");
        for (labels, value) in samples {
            let mut l = format!("playbook=\"{}\"", label(&self.playbook));
            for (k, v) in *labels {
                let _ = write!(l, ",{k}=\"{}\"", label(v));
            }
            let _ = writeln!(self.out, "{name}{{{l}}} {value}");
        }
    }

    fn one(&mut self, name: &str, help: &str, value: Option<f64>) {
        if let Some(v) = value {
            self.family(name, help, &[(&[], v)]);
        }
    }
}

pub(crate) fn render(report: &DrillReport, past: &Past) -> String {
    let mut t = Text {
        out: String::new(),
        playbook: report.playbook.name.clone(),
    };
    let ms = |v: Option<u64>| v.map(|v| v as f64 / 1000.0);
    let passed = report.status == RunStatus::Passed;
    t.one(
        "drrun_drill_success",
        "Whether the last drill passed (1) or not (0): failed, interrupted, or missed an objective.",
        Some(if passed { 1.0 } else { 0.0 }),
    );
    let statuses = ["passed", "failed", "interrupted", "unfinished"];
    let labels: Vec<[(&str, &str); 1]> = statuses.iter().map(|s| [("status", *s)]).collect();
    let samples: Vec<(&[(&str, &str)], f64)> = labels
        .iter()
        .zip(statuses)
        .map(|(l, s)| {
            (
                &l[..],
                if report.status.as_str() == s {
                    1.0
                } else {
                    0.0
                },
            )
        })
        .collect();
    t.family(
        "drrun_drill_status",
        "The last drill's status (1 for the one it has).",
        &samples,
    );
    t.one(
        "drrun_drill_deliberate_break",
        "Whether the last drill failed a step on purpose (--break), a self-test: alerts may skip it.",
        Some(if report.deliberate_break.is_some() { 1.0 } else { 0.0 }),
    );
    t.one(
        "drrun_drill_duration_seconds",
        "Wall-clock duration of the last drill, interruptions included.",
        ms(report.duration_ms),
    );
    t.one(
        "drrun_drill_rto_seconds",
        "Recovery time measured by the last drill.",
        ms(report.rto.measured_ms),
    );
    t.one(
        "drrun_drill_rto_objective_seconds",
        "The recovery time objective (objectives.rto).",
        ms(report.rto.target_ms),
    );
    t.one(
        "drrun_drill_rpo_seconds",
        "Data loss measured by the last drill: the restored data's age.",
        ms(report.rpo.measured_ms),
    );
    t.one(
        "drrun_drill_rpo_objective_seconds",
        "The recovery point objective (objectives.rpo).",
        ms(report.rpo.target_ms),
    );
    let finished = report.finished_at.as_deref().and_then(seconds);
    t.one(
        "drrun_drill_last_run_timestamp_seconds",
        "When the last drill finished.",
        finished,
    );
    t.one(
        "drrun_drill_last_success_timestamp_seconds",
        "When the last passed drill finished (this one or an earlier one).",
        if passed { finished } else { None }.or(past.last_success),
    );
    if let Some(b) = &report.backup {
        t.one(
            "drrun_backup_size_bytes",
            "Size of the backup the last drill restored.",
            b.evidence.size.map(|s| s as f64),
        );
        let age = b
            .evidence
            .taken
            .as_deref()
            .and_then(seconds)
            .zip(seconds(&report.started_at))
            .map(|(taken, started)| (started - taken).max(0.0));
        t.one(
            "drrun_backup_age_seconds",
            "Age of that backup when the drill started.",
            age,
        );
    }
    let step_labels: Vec<[(&str, &str); 1]> = report
        .steps
        .iter()
        .map(|s| [("step", s.id.as_str())])
        .collect();
    let durations: Vec<(&[(&str, &str)], f64)> = report
        .steps
        .iter()
        .zip(&step_labels)
        .filter_map(|(s, l)| s.duration_ms.map(|d| (&l[..], d as f64 / 1000.0)))
        .collect();
    t.family(
        "drrun_step_duration_seconds",
        "How long each step of the last drill took.",
        &durations,
    );
    let state_labels: Vec<[(&str, &str); 2]> = report
        .steps
        .iter()
        .map(|s| [("step", s.id.as_str()), ("state", s.state.as_str())])
        .collect();
    let states: Vec<(&[(&str, &str)], f64)> = state_labels.iter().map(|l| (&l[..], 1.0)).collect();
    t.family(
        "drrun_step_state",
        "Each step's state in the last drill (1 for the state it ended in).",
        &states,
    );
    t.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
