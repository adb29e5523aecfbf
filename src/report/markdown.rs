//! `report.md`: the drill report as a summary a team can paste into a ticket.

use std::fmt::Write;

use super::model::{DrillReport, Measure, StepReport, target_text};
use crate::duration::human_ms as dur;
use crate::outcome::StepState;
use crate::outcome::Verdict;
use crate::util::human_bytes;

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
        "# DR drill `{}`: {}{}\n",
        r.playbook.name,
        r.status.as_str().to_uppercase(),
        r.deliberate_break
            .as_deref()
            .map_or_else(String::new, |s| format!(
                " (deliberate break of `{s}`: a self-test that the drill can go red)"
            ))
    );
    // A list, not a table: a two-column table would need a header row with nothing in it.
    let resumed = match r.resumed {
        0 => String::new(),
        1 => " (resumed once)".into(),
        n => format!(" (resumed {n} times)"),
    };
    let _ = writeln!(out, "- **Run:** `{}`{resumed}", r.run_id);
    let _ = writeln!(
        out,
        "- **Playbook:** `{}` (sha256 `{}`)",
        r.playbook.path,
        &r.playbook.hash[..r.playbook.hash.len().min(12)]
    );
    let by = if r.user.is_empty() {
        String::new()
    } else {
        format!(" by {}", r.user)
    };
    let _ = writeln!(out, "- **Started:** {}{by} on {}", r.started_at, r.host);
    match (&r.finished_at, r.duration_ms) {
        (Some(f), Some(d)) => {
            let _ = writeln!(out, "- **Finished:** {f} ({})", dur(d));
        }
        _ => {
            let _ = writeln!(out, "- **Finished:** not yet (the run can be resumed)");
        }
    }
    let _ = writeln!(out, "- **drrun:** {}\n", r.drrun_version);

    let _ = writeln!(out, "## Objectives\n");
    let _ = writeln!(
        out,
        "| Objective | Target | Measured | Result | Measured from |\n|---|---|---|---|---|"
    );
    objective_row(&mut out, "RTO", &r.rto);
    objective_row(&mut out, "RPO", &r.rpo);
    out.push('\n');
    history(&mut out, r);

    if let Some(b) = &r.backup {
        let e = &b.evidence;
        let _ = writeln!(out, "## Backup\n");
        let _ = writeln!(out, "- object: `{}` (step `{}`)", e.object, b.step);
        if let Some(size) = e.size {
            let _ = writeln!(out, "- size: {} ({size} bytes)", human_bytes(size));
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

    evidence(&mut out, r);

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
        let result = result_text(s);
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
    vars(&mut out, r);
    out
}

/// `succeeded`, `skipped: dependency `migrate` failed`, `failed`.
/// This drill against the earlier ones: the trends, and the warnings first.
fn history(out: &mut String, r: &DrillReport) {
    let Some(h) = &r.history else { return };
    if h.earlier_drills == 0 {
        return;
    }
    let _ = writeln!(
        out,
        "## History
"
    );
    for w in &h.warnings {
        let _ = writeln!(out, "- **Warning:** {w}");
    }
    let _ = writeln!(
        out,
        "- {} earlier drill(s) of this playbook in the state; {}",
        h.earlier_drills,
        match h.consecutive_failures {
            0 => "this one passed".to_string(),
            1 => "this one did not pass".to_string(),
            n => format!("{n} in a row have not passed"),
        }
    );
    for (name, t) in [
        ("RTO", &h.rto),
        ("Restore time", &h.restore),
        ("Backup age", &h.backup_age),
    ] {
        if let Some(t) = t {
            let earlier: Vec<String> = t.earlier_ms.iter().map(|v| dur(*v)).collect();
            let _ = writeln!(
                out,
                "- {name}: {} ({:.2}x the median {} of the last {} passed: {})",
                dur(t.current_ms),
                t.ratio,
                dur(t.median_ms),
                t.earlier_ms.len(),
                earlier.join(", ")
            );
        }
    }
    out.push('\n');
}

fn result_text(s: &StepReport) -> String {
    match (s.state, &s.error) {
        (StepState::Skipped, Some(why)) => format!("skipped: {why}"),
        (state, _) => state.to_string(),
    }
}

/// What each step proved, and what `finally` did: the facts a ticket needs.
fn evidence(out: &mut String, r: &DrillReport) {
    let mut section = |title: &str, phase: &str, empty: &str| {
        let _ = writeln!(out, "## {title}\n");
        let mut any = false;
        for s in r.steps.iter().filter(|s| s.phase == phase) {
            any = true;
            let took = s
                .duration_ms
                .map(|d| format!(" in {}", dur(d)))
                .unwrap_or_default();
            let _ = writeln!(out, "- `{}` ({}): {}{took}", s.id, s.kind, result_text(s));
            for line in &s.evidence {
                let _ = writeln!(out, "  - {line}");
            }
        }
        if !any {
            let _ = writeln!(out, "{empty}");
        }
        out.push('\n');
    };
    section("Evidence", "steps", "No steps.");
    section(
        "Cleanup (finally)",
        "finally",
        "The playbook has no `finally` steps.",
    );
}

/// The vars the drill ran with, marking those the command line set.
fn vars(out: &mut String, r: &DrillReport) {
    if r.vars.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n## Vars\n\n| Var | Value | Set by |\n|---|---|---|");
    for (name, value) in &r.vars {
        let text = value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_string);
        let by = if r.overrides.contains_key(name) {
            "command line (`-e`, `--vars-file`)"
        } else {
            "playbook"
        };
        let _ = writeln!(out, "| `{name}` | `{}` | {by} |", cell(&text));
    }
}
