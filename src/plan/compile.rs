//! Raw playbook -> [`Plan`], collecting every error before failing.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use indexmap::IndexMap;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use super::context::{ContextParts, SecretValues, StepValues, build};
use super::graph::{Ordering, order};
use super::refs::{RefChecker, Resolved, Site};
use super::templates::{check_templates, compile_guards, compile_vars, join_rel};
use super::{DEFAULT_TIMEOUT, Phase, Plan, PlanStep, RetryPolicy};
use crate::diag::{Diagnostic, did_you_mean};
use crate::playbook::load::{Sink, Source, parse};
use crate::playbook::model::{Objectives, RawPlaybook, RawStep};
use crate::playbook::spans::{SpanIndex, join};
use crate::playbook::template::Templates;
use crate::playbook::typing::set_at;
use crate::steps::guard::Guards;
use crate::steps::{KINDS, KindInfo, find_kind};
use crate::util::{path_within, paths_overlap};

/// What the command line adds to a playbook.
#[derive(Debug, Clone, Default)]
pub(crate) struct CompileOptions {
    /// `-e key=value` and `--vars-file`, applied over the playbook's `vars`.
    pub var_overrides: IndexMap<String, Json>,
    /// Where each override came from (`-e`, `--vars-file F`), for the error when it names
    /// a var the playbook does not declare.
    pub var_origins: IndexMap<String, String>,
    /// Environment variables exposed to templates as `env.NAME`.
    pub env_allow: Vec<String>,
}

/// Compiles a playbook. On failure, every problem found is returned, in source order.
pub(crate) fn compile(
    file: &Path,
    source: &Source,
    opts: &CompileOptions,
) -> Result<Plan, Vec<Diagnostic>> {
    let spans = SpanIndex::build(&source.text);
    let (raw, diags) = parse(source, &spans);
    let mut sink = Sink::new(source, &spans);
    sink.diags = diags;
    let Some(raw) = raw else {
        return Err(finish(sink.diags));
    };
    let templates = Templates::new();

    let env: IndexMap<String, String> = opts
        .env_allow
        .iter()
        .filter_map(|n| std::env::var(n).ok().map(|v| (n.clone(), v)))
        .collect();
    let mut checker = RefChecker {
        vars: Vec::new(),
        secrets: raw.secrets.keys().map(String::as_str).collect(),
        objectives: [
            ("rpo", raw.objectives.rpo.is_some()),
            ("rto", raw.objectives.rto.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, set)| set.then_some(n))
        .collect(),
        invalid_objectives: raw.invalid_objectives.iter().map(String::as_str).collect(),
        env: env.keys().map(String::as_str).collect(),
        steps: HashMap::new(),
    };

    let vars = compile_vars(&raw, opts, &env, &templates, &checker, &mut sink);
    let static_parts = ContextParts {
        vars: &vars,
        objectives: &raw.objectives,
        env: &env,
        secret_names: &[],
    };
    let static_ctx = build(
        &static_parts,
        SecretValues::Markers,
        StepValues::Outputs(&IndexMap::new()),
        None,
    );
    checker.vars = vars.keys().map(String::as_str).collect();
    let guards = compile_guards(&raw, &templates, &checker, &static_ctx, &mut sink);
    super::templates::check_notify(&raw.notify, &templates, &checker, &mut sink);

    // Every step id with its kind, so references can be checked in any order.
    let all_steps: Vec<(Phase, &String, &RawStep)> = raw
        .steps
        .iter()
        .map(|(id, s)| (Phase::Main, id, s))
        .chain(raw.finally.iter().map(|(id, s)| (Phase::Finally, id, s)))
        .collect();
    for (phase, id, step) in &all_steps {
        checker
            .steps
            .insert(id.as_str(), (*phase, find_kind(&step.kind)));
    }
    let kinds_for_preview: Vec<(&str, &'static KindInfo)> = all_steps
        .iter()
        .filter_map(|(_, id, s)| find_kind(&s.kind).map(|k| (id.as_str(), k)))
        .collect();
    let secret_names: Vec<&str> = raw.secrets.keys().map(String::as_str).collect();
    let preview_parts = ContextParts {
        vars: &vars,
        objectives: &raw.objectives,
        env: &env,
        secret_names: &secret_names,
    };
    let preview_ctx = build(
        &preview_parts,
        SecretValues::Markers,
        StepValues::Placeholders(&kinds_for_preview, &IndexMap::new()),
        None,
    );

    let mut steps = Vec::new();
    let mut dep_ids = Vec::new();
    for (phase, id, raw_step) in &all_steps {
        let compiled = compile_step(
            *phase,
            id,
            raw_step,
            &raw,
            &templates,
            &checker,
            &preview_ctx,
            &guards,
            &mut sink,
        );
        if let Some((step, deps)) = compiled {
            steps.push(step);
            dep_ids.push(deps);
        }
    }

    check_objective_steps(&raw.objectives, &checker, &mut sink);

    let (main_levels, finally_levels) = if sink.diags.is_empty() {
        resolve_deps(&mut steps, &dep_ids);
        (
            order_phase(&steps, Phase::Main, &mut sink),
            order_phase(&steps, Phase::Finally, &mut sink),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    if !sink.diags.is_empty() {
        return Err(finish(sink.diags));
    }
    Ok(Plan {
        name: raw.name.clone(),
        description: raw.description.clone(),
        file: file.to_path_buf(),
        base_dir: file
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| ".".into()),
        source_hash: hex::encode(Sha256::digest(source.text.as_bytes())),
        vars,
        secrets: raw.secrets.clone(),
        objectives: raw.objectives.clone(),
        guards,
        notify: raw.notify.clone(),
        env,
        steps,
        main_levels,
        finally_levels,
    })
}

/// `objectives.rto_until` must name a main step; `objectives.rpo_from` a step of a kind
/// that dates its data.
fn check_objective_steps(objectives: &Objectives, checker: &RefChecker, sink: &mut Sink) {
    let ids = || checker.steps.keys().copied().collect::<Vec<_>>();
    if let Some(id) = &objectives.rto_until {
        let path = "objectives.rto_until".to_string();
        match checker.steps.get(id.as_str()) {
            None => sink.at_value(
                Diagnostic::new(path, format!("`rto_until` names a step that does not exist: `{id}`"))
                    .with_help_opt(did_you_mean(id, ids())),
            ),
            Some((Phase::Finally, _)) => sink.at_value(
                Diagnostic::new(path, format!("`rto_until` names the finally step `{id}`"))
                    .with_help("the RTO ends when the service is back, before cleanup: name a step under `steps`"),
            ),
            Some(_) => {}
        }
    }
    if let Some(id) = &objectives.rpo_from {
        let path = "objectives.rpo_from".to_string();
        match checker.steps.get(id.as_str()) {
            None => sink.at_value(
                Diagnostic::new(
                    path,
                    format!("`rpo_from` names a step that does not exist: `{id}`"),
                )
                .with_help_opt(did_you_mean(id, ids())),
            ),
            Some((_, Some(kind))) if kind.evidence.data_time.is_none() => {
                let dating: Vec<String> = KINDS
                    .iter()
                    .filter(|k| k.evidence.data_time.is_some())
                    .map(|k| format!("`{}`", k.name))
                    .collect();
                sink.at_value(
                    Diagnostic::new(
                        path,
                        format!(
                            "`rpo_from` names `{id}`, a `{}` step, which does not date the data",
                            kind.name
                        ),
                    )
                    .with_help(format!(
                        "name a step of a kind that dates its data: {}",
                        dating.join(", ")
                    )),
                );
            }
            Some(_) => {}
        }
    }
}

fn finish(diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    crate::diag::Diagnostics(diags).sorted().0
}

#[allow(clippy::too_many_arguments)]
fn compile_step(
    phase: Phase,
    id: &str,
    raw_step: &RawStep,
    raw: &RawPlaybook,
    templates: &Templates,
    checker: &RefChecker,
    preview_ctx: &minijinja::Value,
    guards: &Guards,
    sink: &mut Sink,
) -> Option<(PlanStep, StepDeps)> {
    let base = join(phase.section(), id);
    let kind = find_kind(&raw_step.kind);
    let site = Site::Step { id, phase, kind };
    if kind.is_none() {
        let help = did_you_mean(&raw_step.kind, KINDS.iter().map(|k| k.name)).or_else(|| {
            Some(format!(
                "known kinds: {}",
                KINDS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
            ))
        });
        sink.at_value(
            Diagnostic::new(
                join(&base, "kind"),
                format!("unknown step kind `{}`", raw_step.kind),
            )
            .with_help_opt(help),
        );
    }

    let with_path = join(&base, "with");
    let mut step_refs = Vec::new();
    let mut dynamic = Vec::new();
    let broken = check_templates(
        &raw_step.with,
        &with_path,
        site,
        templates,
        checker,
        sink,
        &mut step_refs,
        &mut dynamic,
    );
    if let Some(when) = &raw_step.common.when {
        let when_path = join(&base, "when");
        match templates.expression_references(when) {
            Ok(refs) => {
                for reference in refs {
                    match checker.check(&reference, site) {
                        Ok(Resolved::Step(dep)) if !step_refs.contains(&dep) => step_refs.push(dep),
                        Ok(_) => {}
                        Err(e) if e.quiet => {}
                        Err(e) => sink.at_value(
                            Diagnostic::new(when_path.clone(), e.message).with_help_opt(e.help),
                        ),
                    }
                }
            }
            Err(e) => sink.at_value(Diagnostic::new(
                when_path,
                format!("invalid `when` expression: {e}"),
            )),
        }
    }
    for (i, need) in raw_step.common.needs.iter().enumerate() {
        let path = format!("{base}.needs[{i}]");
        match checker.steps.get(need.as_str()) {
            None => {
                let ids: Vec<&str> = checker.steps.keys().copied().filter(|s| *s != id).collect();
                sink.at_value(
                    Diagnostic::new(
                        path,
                        format!("`needs` names a step that does not exist: `{need}`"),
                    )
                    .with_help_opt(did_you_mean(need, ids)),
                );
            }
            Some((need_phase, _)) if *need_phase != phase => {
                let help = if phase == Phase::Finally {
                    "finally steps run after all steps anyway; use `when:` on `run.status` to condition them"
                } else {
                    "steps cannot wait for finally steps: finally runs last"
                };
                sink.at_value(
                    Diagnostic::new(path, format!("`{need}` is in another section"))
                        .with_help(help),
                );
            }
            Some(_) if need == id => {
                sink.at_value(Diagnostic::new(path, format!("step `{id}` needs itself")));
            }
            Some(_) => {
                if !step_refs.contains(need) {
                    step_refs.push(need.clone());
                }
            }
        }
    }

    // Type the settings as far as they are known before the run.
    let mut effect = kind.map(|k| k.effect);
    if let Some(kind) = kind {
        // A template already reported as broken renders as a placeholder, and typing
        // says nothing about it: the rest of the settings are still checked.
        let mut with = raw_step.with.clone();
        for rel in &broken {
            set_at(&mut with, rel, Json::String("<invalid template>".into()));
        }
        match templates.render_json(&with, preview_ctx) {
            Err(e) => sink.at_value(Diagnostic::new(
                join_rel(&with_path, &e.path),
                format!("template error: {}", e.message),
            )),
            Ok(rendered) => match (kind.check)(&rendered, &|rel: &str| {
                dynamic.iter().any(|(d, _)| path_within(rel, d))
                    || broken.iter().any(|b| path_within(rel, b))
            }) {
                Ok(inspection) => {
                    for issue in inspection.issues {
                        sink.at_key(Diagnostic::new(
                            join_rel(&with_path, &issue.field),
                            issue.message,
                        ));
                    }
                    // A value known only later renders as a placeholder, which no kind
                    // takes for a read: the effect can only come out as strong or stronger.
                    effect = Some(inspection.effect);
                    // Refuse what guards protect now, before anything runs, wherever the
                    // settings are already known (a guarded namespace reached through
                    // `-e`); the rest is checked once secrets are read.
                    for touch in inspection.touches {
                        let known = touch
                            .fields()
                            .iter()
                            .all(|f| !dynamic.iter().any(|(d, _)| paths_overlap(d, f)));
                        if known && let Err(e) = guards.check(&touch) {
                            let field = touch
                                .fields()
                                .iter()
                                .find(|f| raw_step.with.get(**f).is_some())
                                .unwrap_or(&touch.fields()[0]);
                            sink.at_value(
                                Diagnostic::new(join_rel(&with_path, field), e.message)
                                    .with_help("guards protect production: point this step at the DR target, or change `guards` if this target is not production"),
                            );
                        }
                    }
                }
                Err(errors) => {
                    let fields = setting_names(kind);
                    for e in errors {
                        sink.serde_error_with_fields(
                            &join_rel(&with_path, &e.path),
                            &e.message,
                            &fields,
                        );
                    }
                }
            },
        }
    }

    let timeout = raw_step
        .common
        .timeout
        .or(raw.defaults.timeout)
        .map(|d| d.0)
        .unwrap_or(DEFAULT_TIMEOUT);
    let retry = raw_step
        .common
        .retry
        .as_ref()
        .or(raw.defaults.retry.as_ref())
        .map(RetryPolicy::from_spec)
        .unwrap_or_default();
    // Dependencies are resolved to indices once every step exists (see `order_phase`);
    // only those of the same phase order execution.
    let all_refs = step_refs.clone();
    let deps_same_phase: Vec<String> = step_refs
        .into_iter()
        .filter(|d| {
            checker
                .steps
                .get(d.as_str())
                .is_some_and(|(p, _)| *p == phase)
        })
        .collect();
    let step = PlanStep {
        id: id.to_string(),
        phase,
        kind: kind?,
        with: raw_step.with.clone(),
        description: raw_step.common.description.clone(),
        when: raw_step.common.when.clone(),
        deps: Vec::new(),
        uses: Vec::new(),
        timeout,
        retry,
        effect: effect?,
        line: sink.spans.key(&base).line,
        unknown: dynamic,
    };
    Some((
        step,
        StepDeps {
            order: deps_same_phase,
            uses: all_refs,
        },
    ))
}

/// A step's dependencies by id, until every step has an index.
struct StepDeps {
    /// Same-phase steps that must succeed first (`needs` and template references).
    order: Vec<String>,
    /// Every step whose outputs the templates read.
    uses: Vec<String>,
}

/// Turns dependency ids into indices into `steps`.
fn resolve_deps(steps: &mut [PlanStep], dep_ids: &[StepDeps]) {
    let index: HashMap<String, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.clone(), i))
        .collect();
    let resolve = |ids: &[String]| {
        let mut seen = HashSet::new();
        ids.iter()
            .filter_map(|id| index.get(id).copied())
            .filter(|i| seen.insert(*i))
            .collect::<Vec<_>>()
    };
    for (step, ids) in steps.iter_mut().zip(dep_ids) {
        step.deps = resolve(&ids.order);
        step.uses = resolve(&ids.uses);
    }
}

/// Orders one phase into parallel levels; reports a cycle as its path.
fn order_phase(steps: &[PlanStep], phase: Phase, sink: &mut Sink) -> Vec<Vec<usize>> {
    let members: Vec<usize> = (0..steps.len())
        .filter(|i| steps[*i].phase == phase)
        .collect();
    let local: HashMap<usize, usize> = members.iter().enumerate().map(|(l, g)| (*g, l)).collect();
    let local_deps: Vec<Vec<usize>> = members
        .iter()
        .map(|g| steps[*g].deps.iter().map(|d| local[d]).collect())
        .collect();
    match order(&local_deps) {
        Ordering::Levels(levels) => levels
            .into_iter()
            .map(|l| l.into_iter().map(|i| members[i]).collect())
            .collect(),
        Ordering::Cycle(path) => {
            let names: Vec<&str> = path
                .iter()
                .map(|l| steps[members[*l]].id.as_str())
                .collect();
            let first = &steps[members[path[0]]].id;
            sink.at_key(
                Diagnostic::new(join(phase.section(), first), format!("dependency cycle: {}", names.join(" -> ")))
                    .with_help("a step's `needs` and its `steps.X.outputs` references must not lead back to it"),
            );
            Vec::new()
        }
    }
}

/// The top-level setting names of a kind, from its schema.
fn setting_names(kind: &KindInfo) -> Vec<String> {
    crate::schema::kind_schema(kind)["schema"]["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}
