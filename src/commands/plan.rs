//! `drrun plan`: the dry run. Renders every step as far as it is known before the run,
//! in parallel levels, and asks each kind for a read-only preview.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use indexmap::IndexMap;
use serde_json::{Value, json};

use super::{compile_options, load_plan};
use crate::cli::{Output, PlanArgs};
use crate::error::{EXIT_FAILED, EXIT_USAGE};
use crate::outcome::{FailureClass, Outputs};
use crate::plan::context::SecretValues;
use crate::plan::{Phase, Plan, Unknown};
use crate::playbook::template::Templates;
use crate::report::printer::{err, out};
use crate::secrets::{Redactor, SecretError};
use crate::steps::{Effect, Preview, PreviewCtx, StepConfig};

pub(super) fn plan(args: PlanArgs) -> Result<ExitCode> {
    let plan = load_plan(&args.playbook, &compile_options(&args.vars)?)?;
    let ctx = PreviewCtx {
        offline: args.offline,
        guards: Arc::new(plan.guards.clone()),
        base_dir: plan.base_dir.clone(),
        work_dir: crate::state::runs::default_state_dir(&args.playbook),
        pending: Vec::new(),
    };
    // A live preview connects, so it needs the secrets; they are only ever shown as markers.
    let secrets = if args.offline {
        None
    } else {
        Some(crate::secrets::resolve(&plan.secrets, &plan.base_dir))
    };
    let rendered = render_plan(&plan, &ctx, secrets);
    match args.output {
        Output::Json => out(&serde_json::to_string_pretty(&rendered)?),
        Output::Human => out(&human(&plan, &rendered, args.verbose)),
    }
    // A plan that found what the run would meet says so in its exit code: 2 when a guard
    // refuses (the playbook points at production), 1 when a preview failed.
    let problems = problems(&rendered);
    if problems.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = String::new();
    for (step, class, message) in &problems {
        text.push_str(&format!("error: step `{step}` ({class}): {message}\n"));
    }
    err(&text);
    let guard = problems.iter().any(|(_, class, _)| class == "guard");
    Ok(ExitCode::from(if guard { EXIT_USAGE } else { EXIT_FAILED }))
}

/// A step after one that changes the world (a restore creating the database it reads)
/// cannot be judged by what the world is now: a problem its preview found there is what
/// it cannot know yet, not a failure, unless a guard refused it.
fn before_changes(plan: &Plan, i: usize, mut preview: Preview) -> Preview {
    if preview.failed.is_none() || preview.failed == Some(FailureClass::Guard) {
        return preview;
    }
    let mut seen = vec![false; plan.steps.len()];
    let mut stack: Vec<usize> = plan.steps[i]
        .deps
        .iter()
        .chain(&plan.steps[i].uses)
        .copied()
        .collect();
    let mut changer = None;
    while let Some(d) = stack.pop() {
        if std::mem::replace(&mut seen[d], true) {
            continue;
        }
        if plan.steps[d].effect != Effect::Read {
            changer = Some(d);
            break;
        }
        stack.extend(
            plan.steps[d]
                .deps
                .iter()
                .chain(&plan.steps[d].uses)
                .copied(),
        );
    }
    if let Some(d) = changer {
        preview.failed = None;
        preview.cannot_preview = Some(format!(
            "cannot preview before `{}` runs: that step creates or changes what this one reads ({})",
            plan.steps[d].id,
            preview.cannot_preview.unwrap_or_default()
        ));
    }
    preview
}

/// (step, failure class, message) of every preview that failed.
fn problems(rendered: &Value) -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    for phase in ["steps", "finally"] {
        for step in rendered["phases"][phase]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|level| level.as_array().into_iter().flatten())
        {
            if let Some(class) = step["preview"]["failed"].as_str() {
                found.push((
                    step["id"].as_str().unwrap_or("").to_string(),
                    class.to_string(),
                    step["preview"]["cannot_preview"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                ));
            }
        }
    }
    found
}

/// The plan as JSON: phases -> levels -> steps with rendered settings and previews.
pub(super) fn render_plan(
    plan: &Plan,
    preview_ctx: &PreviewCtx,
    secrets: Option<Result<IndexMap<String, String>, Vec<SecretError>>>,
) -> Value {
    let templates = Templates::new();
    let (secret_values, secret_problem, redactor) = match &secrets {
        Some(Ok(values)) => (
            Some(values),
            None,
            Redactor::new(values.iter().map(|(k, v)| (k.clone(), v.clone()))),
        ),
        Some(Err(errors)) => (
            None,
            Some(
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            Redactor::default(),
        ),
        None => (None, None, Redactor::default()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Outputs that read-only steps' previews found; later steps render with them (the
    // production tag a deploy would set, instead of a placeholder).
    let mut known: IndexMap<String, Outputs> = IndexMap::new();
    let contexts = |known: &IndexMap<String, Outputs>| {
        (
            plan.preview_context(known),
            secret_values
                .map(|values| plan.preview_context_with(SecretValues::Real(values), known)),
        )
    };
    let (mut ctx, mut real_ctx) = contexts(&known);
    let mut phases = serde_json::Map::new();
    for phase in [Phase::Main, Phase::Finally] {
        let mut levels: Vec<Value> = Vec::new();
        for level in plan.levels(phase) {
            let mut rendered_level = Vec::new();
            let mut found = Vec::new();
            for &i in level {
                let step = &plan.steps[i];
                let with = templates
                    .render_json(&step.with, &ctx)
                    .unwrap_or_else(|_| step.with.clone());
                // Values known only at run time stay placeholders; type them for the
                // preview only when that works.
                let uses_secret = step.unknown.iter().any(|(_, u)| *u == Unknown::Secret);
                // What this step's preview cannot know yet: outputs of steps whose
                // previews found none, run fields, and (offline) secrets.
                let step_ctx = PreviewCtx {
                    pending: step
                        .unknown
                        .iter()
                        .filter(|(_, u)| match u {
                            Unknown::Secret => secret_values.is_none(),
                            Unknown::Run => true,
                            Unknown::Step(id) => !known.contains_key(id),
                        })
                        .map(|(path, _)| path.clone())
                        .collect(),
                    ..preview_ctx.clone()
                };
                let live_with = match (&real_ctx, &secret_problem) {
                    (_, Some(problem)) if uses_secret => Err(format!("cannot preview: {problem}")),
                    (Some(real), _) => Ok(templates
                        .render_json(&step.with, real)
                        .unwrap_or_else(|_| with.clone())),
                    _ => Ok(with.clone()),
                };
                // A step whose `when` is already false (it reads only vars) will not run.
                let skipped = step
                    .when
                    .as_ref()
                    .filter(|w| templates.condition(w, &ctx) == Ok(false));
                let preview = match live_with.map(|w| StepConfig::from_with(step.kind.name, w)) {
                    _ if skipped.is_some() => Preview::lines([format!(
                        "skipped: `when` is false ({})",
                        skipped.map_or("", String::as_str)
                    )]),
                    Ok(Ok(config)) => {
                        let preview = runtime.block_on(config.preview(&step_ctx));
                        if step.effect == Effect::Read
                            && let Some(outputs) = &preview.outputs
                        {
                            found.push((step.id.clone(), outputs.clone()));
                        }
                        redact_preview(before_changes(plan, i, preview), &redactor)
                    }
                    Ok(Err(_)) => Preview::cannot("depends on values known only at run time"),
                    Err(reason) => Preview::cannot(reason),
                };
                rendered_level.push(json!({
                    "id": step.id,
                    "kind": step.kind.name,
                    "effect": step.effect.as_str(),
                    "description": step.description,
                    "needs": step.deps.iter().map(|d| plan.steps[*d].id.clone()).collect::<Vec<_>>(),
                    "when": step.when,
                    "timeout": crate::duration::format_duration(step.timeout),
                    "retry_attempts": step.retry.attempts,
                    "with": with,
                    "preview": preview,
                }));
            }
            if !found.is_empty() {
                known.extend(found);
                (ctx, real_ctx) = contexts(&known);
            }
            levels.push(Value::Array(rendered_level));
        }
        phases.insert(
            if phase == Phase::Main {
                "steps"
            } else {
                "finally"
            }
            .into(),
            Value::Array(levels),
        );
    }
    json!({
        "playbook": plan.file.display().to_string(),
        "name": plan.name,
        "offline": preview_ctx.offline,
        "objectives": crate::plan::context::objectives_json(&plan.objectives),
        "guards": plan.guards,
        "phases": phases,
    })
}

fn redact_preview(p: Preview, redactor: &Redactor) -> Preview {
    Preview {
        lines: p.lines.iter().map(|l| redactor.redact(l)).collect(),
        cannot_preview: p.cannot_preview.map(|c| redactor.redact(&c)),
        failed: p.failed,
        outputs: None,
    }
}

/// Settings shown on a step's line by default: short scalars, as written, at most this many.
const SHORT_SETTINGS: usize = 5;
const SHORT_VALUE: usize = 48;

/// `bucket=acme prefix=acme/daily- max_age=26h`: the settings that fit on the step's line.
fn short_settings(with: &Value) -> String {
    let Some(map) = with.as_object() else {
        return String::new();
    };
    let mut parts = Vec::new();
    let mut more = 0;
    for (k, v) in map {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                more += 1;
                continue;
            }
        };
        if text.chars().count() > SHORT_VALUE
            || text.contains('\n')
            || parts.len() >= SHORT_SETTINGS
        {
            more += 1;
            continue;
        }
        parts.push(format!("{k}={text}"));
    }
    if more > 0 {
        parts.push(format!("(+{more} more)"));
    }
    parts.join(" ")
}

fn human(plan: &Plan, rendered: &Value, verbose: bool) -> String {
    let mut text = format!("plan for {} ({})\n", plan.name, plan.file.display());
    if let Some(d) = &plan.description {
        text.push_str(&format!("  {d}\n"));
    }
    for (phase, title) in [("steps", "steps"), ("finally", "finally (always runs)")] {
        let levels = rendered["phases"][phase]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if levels.is_empty() {
            continue;
        }
        text.push_str(&format!("\n{title}:\n"));
        for (n, level) in levels.iter().enumerate() {
            let steps = level.as_array().cloned().unwrap_or_default();
            let parallel = if steps.len() > 1 {
                format!(" ({} in parallel)", steps.len())
            } else {
                String::new()
            };
            text.push_str(&format!("  level {}{parallel}\n", n + 1));
            for s in steps {
                let needs: Vec<&str> = s["needs"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let needs = if needs.is_empty() {
                    String::new()
                } else {
                    format!(" needs: {}", needs.join(", "))
                };
                let head = format!(
                    "    {} [{}, {}]{needs}",
                    s["id"].as_str().unwrap_or(""),
                    s["kind"].as_str().unwrap_or(""),
                    s["effect"].as_str().unwrap_or(""),
                );
                if verbose {
                    text.push_str(&format!("{head}\n"));
                    if let Some(d) = s["description"].as_str() {
                        text.push_str(&format!("      # {d}\n"));
                    }
                    if let Some(w) = s["when"].as_str() {
                        text.push_str(&format!("      when: {w}\n"));
                    }
                    let yaml = serde_yaml_ng::to_string(&s["with"]).unwrap_or_default();
                    for line in yaml.lines().filter(|l| *l != "{}") {
                        text.push_str(&format!("      {line}\n"));
                    }
                    if let Some(reason) = s["preview"]["cannot_preview"].as_str() {
                        text.push_str(&format!("      preview: {reason}\n"));
                    }
                } else {
                    text.push_str(&format!("{head}  {}\n", short_settings(&s["with"])));
                    if let Some(w) = s["when"].as_str() {
                        text.push_str(&format!("      when: {w}\n"));
                    }
                    // Offline, every live preview is skipped alike: said once, at the end.
                    if let Some(reason) = s["preview"]["cannot_preview"].as_str()
                        && (s["preview"]["failed"].is_string() || !reason.contains("offline"))
                    {
                        text.push_str(&format!("      preview: {reason}\n"));
                    }
                }
                for line in s["preview"]["lines"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    text.push_str(&format!("      => {line}\n"));
                }
            }
        }
    }
    if !verbose {
        if rendered["offline"].as_bool() == Some(true) {
            text.push_str(
                "\n(--offline: no service was contacted, so nothing live was previewed)\n",
            );
        }
        text.push_str("(`--verbose` shows every setting)\n");
    }
    text
}
