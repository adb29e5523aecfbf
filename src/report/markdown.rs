//! `report.md`: the drill report as a summary a team can paste into a ticket.

use std::fmt::Write;

use super::model::{DrillReport, Measure, target_text};
use crate::duration::human_ms as dur;
use crate::outcome::StepState;
use crate::outcome::Verdict;

/// A table cell: no line breaks, no unescaped pipes.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn objective_row(out: &mut String, name: &str, m: &Measure) {
    let target = m.target_ms.map_or_else(|| "none".into(), target_text);
    let measured = m
        .measured_ms
        .map(dur)
        .unwrap_or_else(|| format!("not measured: {}", m.note.as_deref().unwrap_or("?")));
    let verdict = m.verdict();
    let result = match verdict {
        Verdict::NoObjective => "-".into(),
        Verdict::Met { .. } => verdict.to_string(),
        Verdict::Missed { .. } => verdict.to_string().replacen("MISSED", "**MISSED**", 1),
    };
    let _ = writeln!(
        out,
        "| {name} | {target} | {} | {result} | {} |",
        cell(&measured),
        cell(&m.source)
    );
}

pub(crate) fn render(r: &DrillReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# DR drill `{}`: {}\n",
        r.playbook.name,
        r.status.as_str().to_uppercase()
    );
    let _ = writeln!(out, "| | |\n|---|---|");
    let resumed = match r.resumed {
        0 => String::new(),
        1 => " (resumed once)".into(),
        n => format!(" (resumed {n} times)"),
    };
    let _ = writeln!(out, "| Run | `{}`{resumed} |", r.run_id);
    let _ = writeln!(
        out,
        "| Playbook | `{}` (sha256 `{}`) |",
        cell(&r.playbook.path),
        &r.playbook.hash[..r.playbook.hash.len().min(12)]
    );
    let _ = writeln!(out, "| Started | {} |", r.started_at);
    match (&r.finished_at, r.duration_ms) {
        (Some(f), Some(d)) => {
            let _ = writeln!(out, "| Finished | {f} ({}) |", dur(d));
        }
        _ => {
            let _ = writeln!(out, "| Finished | not yet (the run can be resumed) |");
        }
    }
    let _ = writeln!(
        out,
        "| Host | {} (drrun {}) |\n",
        cell(&r.host),
        r.drrun_version
    );

    let _ = writeln!(out, "## Objectives\n");
    let _ = writeln!(
        out,
        "| Objective | Target | Measured | Result | Measured from |\n|---|---|---|---|---|"
    );
    objective_row(&mut out, "RTO", &r.rto);
    objective_row(&mut out, "RPO", &r.rpo);
    out.push('\n');

    if let Some(b) = &r.backup {
        let e = &b.evidence;
        let _ = writeln!(out, "## Backup\n");
        let _ = writeln!(out, "- object: `{}` (step `{}`)", e.object, b.step);
        if let Some(size) = e.size {
            let _ = writeln!(out, "- size: {size} bytes");
        }
        if let Some(sha) = &e.sha256 {
            let _ = writeln!(out, "- sha256: `{sha}`");
        }
        let _ = writeln!(
            out,
            "- taken: {} (age {} at selection)\n",
            e.taken.as_deref().unwrap_or("unknown"),
            e.age.as_deref().unwrap_or("unknown")
        );
    }
    if let Some(img) = &r.image {
        let _ = writeln!(out, "## Image deployed\n");
        let _ = writeln!(out, "- `{}` (step `{}`)", img.image, img.step);
        if let Some(before) = img.before.as_object() {
            for (k, v) in before {
                let _ = writeln!(out, "- before: `{k}` ran `{}`", v.as_str().unwrap_or(""));
            }
        }
        out.push('\n');
    }
    if let Some(f) = &r.failed_step {
        let _ = writeln!(out, "## Failure\n");
        let _ = writeln!(
            out,
            "Step `{}` ({}, {}):\n",
            f.step,
            f.kind,
            f.class.as_str()
        );
        let _ = writeln!(out, "```\n{}\n```\n", f.error.trim_end());
    }

    let _ = writeln!(out, "## Timeline\n");
    for m in &r.timeline {
        let _ = writeln!(out, "- +{} {} ({})", dur(m.offset_ms), m.what, m.at);
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "| Step | Kind | Phase | Start | Duration | Attempts | Result |\n|---|---|---|---|---|---|---|"
    );
    let mut steps: Vec<_> = r.steps.iter().collect();
    steps.sort_by_key(|s| (s.phase != "steps", s.offset_ms.unwrap_or(u64::MAX)));
    for s in steps {
        let result = match (s.state, &s.error) {
            (StepState::Skipped, Some(why)) => format!("skipped: {why}"),
            (state, _) => state.to_string(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            s.id,
            s.kind,
            s.phase,
            s.offset_ms
                .map(|o| format!("+{}", dur(o)))
                .unwrap_or_else(|| "-".into()),
            s.duration_ms.map(dur).unwrap_or_else(|| "-".into()),
            s.attempts,
            cell(&result)
        );
    }
    out
}
