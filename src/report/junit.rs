//! `junit.xml`: one test case per step, plus one per objective, for CI systems.

use std::fmt::Write;

use super::model::{DrillReport, Measure};
use crate::outcome::{FailureClass, StepState};

fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters, even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

fn secs(ms: Option<u64>) -> String {
    format!("{:.3}", ms.unwrap_or(0) as f64 / 1000.0)
}

struct Case {
    class: String,
    name: String,
    time: Option<u64>,
    /// `(type, message, body)`.
    failure: Option<(String, String, String)>,
    skipped: Option<String>,
}

fn objective_case(suite: &str, name: &str, m: &Measure) -> Option<Case> {
    let target = m.target_ms?;
    let headline = m.headline(name);
    let failure = m.verdict().missed().then(|| {
        let msg = match m.measured_ms {
            Some(v) => format!("{name} {v} ms exceeds the objective of {target} ms"),
            None => headline.clone(),
        };
        ("objective".to_string(), msg, headline.clone())
    });
    // An objective with a target that nothing measured is neither met nor missed.
    let skipped = (failure.is_none() && m.measured_ms.is_none()).then(|| headline.clone());
    Some(Case {
        class: format!("drrun.{suite}.objectives"),
        name: name.into(),
        time: m.measured_ms,
        failure,
        skipped,
    })
}

pub(crate) fn render(r: &DrillReport) -> String {
    let suite = &r.playbook.name;
    let mut cases: Vec<Case> = r
        .steps
        .iter()
        .map(|s| {
            let failure = match s.state {
                StepState::Failed => Some((
                    s.class.unwrap_or(FailureClass::Other).as_str().to_string(),
                    s.error
                        .clone()
                        .unwrap_or_default()
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string(),
                    s.error.clone().unwrap_or_default(),
                )),
                StepState::Cancelled | StepState::Running => Some((
                    "interrupted".into(),
                    format!("step {}", s.state),
                    format!("step {}", s.state),
                )),
                _ => None,
            };
            let skipped = match s.state {
                StepState::Skipped => Some(s.error.clone().unwrap_or_else(|| "skipped".into())),
                StepState::Pending => Some("not started".into()),
                _ => None,
            };
            Case {
                class: format!("drrun.{suite}.{}", s.phase),
                name: format!("{} ({})", s.id, s.kind),
                time: s.duration_ms,
                failure,
                skipped,
            }
        })
        .collect();
    cases.extend(objective_case(suite, "RTO", &r.rto));
    cases.extend(objective_case(suite, "RPO", &r.rpo));

    let failures = cases.iter().filter(|c| c.failure.is_some()).count();
    let skipped = cases.iter().filter(|c| c.skipped.is_some()).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"drrun\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{}\">",
        cases.len(),
        secs(r.duration_ms)
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{}\" timestamp=\"{}\" hostname=\"{}\">",
        esc(suite),
        cases.len(),
        secs(r.duration_ms),
        esc(&r.started_at),
        esc(&r.host)
    );
    let _ = writeln!(out, "    <properties>");
    for (k, v) in [
        ("run_id", r.run_id.as_str()),
        ("status", r.status.as_str()),
        ("playbook", r.playbook.path.as_str()),
        ("playbook_sha256", r.playbook.hash.as_str()),
        ("drrun_version", r.drrun_version.as_str()),
    ] {
        let _ = writeln!(out, "      <property name=\"{k}\" value=\"{}\"/>", esc(v));
    }
    let _ = writeln!(out, "    </properties>");
    for c in &cases {
        let open = format!(
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{}\"",
            esc(&c.class),
            esc(&c.name),
            secs(c.time)
        );
        match (&c.failure, &c.skipped) {
            (Some((kind, message, body)), _) => {
                let _ = writeln!(
                    out,
                    "{open}>\n      <failure type=\"{}\" message=\"{}\">{}</failure>\n    </testcase>",
                    esc(kind),
                    esc(message),
                    esc(body)
                );
            }
            (None, Some(why)) => {
                let _ = writeln!(
                    out,
                    "{open}>\n      <skipped message=\"{}\"/>\n    </testcase>",
                    esc(why)
                );
            }
            (None, None) => {
                let _ = writeln!(out, "{open}/>");
            }
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}
