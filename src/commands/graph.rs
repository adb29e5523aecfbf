use std::process::ExitCode;

use anyhow::Result;

use super::{compile_options, load_plan};
use crate::cli::{GraphArgs, GraphFormat};
use crate::plan::{Phase, Plan};
use crate::report::printer::out;

pub(super) fn graph(args: GraphArgs) -> Result<ExitCode> {
    let plan = load_plan(&args.playbook, &compile_options(&args.vars)?)?;
    out(&match args.format {
        GraphFormat::Text => text(&plan),
        GraphFormat::Dot => dot(&plan),
        GraphFormat::Mermaid => mermaid(&plan),
    });
    Ok(ExitCode::SUCCESS)
}

fn text(plan: &Plan) -> String {
    let mut out = String::new();
    for phase in [Phase::Main, Phase::Finally] {
        if plan.levels(phase).is_empty() {
            continue;
        }
        out.push_str(&format!("{}:\n", phase.section()));
        for i in plan.order(phase) {
            let s = &plan.steps[i];
            let deps: Vec<&str> = s.deps.iter().map(|d| plan.steps[*d].id.as_str()).collect();
            if deps.is_empty() {
                out.push_str(&format!("  {} ({})\n", s.id, s.kind.name));
            } else {
                out.push_str(&format!(
                    "  {} ({}) <- {}\n",
                    s.id,
                    s.kind.name,
                    deps.join(", ")
                ));
            }
        }
    }
    out
}

fn dot(plan: &Plan) -> String {
    let mut out = format!("digraph \"{}\" {{\n  rankdir=LR;\n", plan.name);
    for (phase, cluster) in [(Phase::Main, "steps"), (Phase::Finally, "finally")] {
        if plan.levels(phase).is_empty() {
            continue;
        }
        out.push_str(&format!(
            "  subgraph cluster_{cluster} {{\n    label=\"{cluster}\";\n"
        ));
        for i in plan.order(phase) {
            let s = &plan.steps[i];
            out.push_str(&format!(
                "    \"{}\" [label=\"{}\\n{}\"];\n",
                s.id, s.id, s.kind.name
            ));
        }
        out.push_str("  }\n");
    }
    for s in &plan.steps {
        for d in &s.deps {
            out.push_str(&format!("  \"{}\" -> \"{}\";\n", plan.steps[*d].id, s.id));
        }
    }
    out.push_str("}\n");
    out
}

fn mermaid(plan: &Plan) -> String {
    let mut out = String::from("flowchart LR\n");
    for (phase, title) in [(Phase::Main, "steps"), (Phase::Finally, "finally")] {
        if plan.levels(phase).is_empty() {
            continue;
        }
        out.push_str(&format!("  subgraph {title}\n"));
        for i in plan.order(phase) {
            let s = &plan.steps[i];
            out.push_str(&format!("    {}[\"{}<br/>{}\"]\n", s.id, s.id, s.kind.name));
        }
        out.push_str("  end\n");
    }
    for s in &plan.steps {
        for d in &s.deps {
            out.push_str(&format!("  {} --> {}\n", plan.steps[*d].id, s.id));
        }
    }
    out
}
