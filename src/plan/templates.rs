//! Templates in the playbook's sections: every reference checked (with "did you mean"),
//! `vars` rendered in order, guards rendered, and which settings of a step are known only
//! later.

use indexmap::IndexMap;
use serde_json::Value as Json;

use super::Unknown;
use super::compile::CompileOptions;
use super::context::{ContextParts, SecretValues, StepValues, build};
use super::refs::{RefChecker, Resolved, Site};
use crate::diag::Diagnostic;
use crate::diag::did_you_mean;
use crate::playbook::load::Sink;
use crate::playbook::model::RawPlaybook;
use crate::playbook::spans::join;
use crate::playbook::template::{Templates, is_template};
use crate::steps::guard::Guards;

/// Renders `vars` in declaration order; a var may use the vars above it and `env`.
pub(super) fn compile_vars(
    raw: &RawPlaybook,
    opts: &CompileOptions,
    env: &IndexMap<String, String>,
    templates: &Templates,
    checker: &RefChecker,
    sink: &mut Sink,
) -> IndexMap<String, Json> {
    let mut vars: IndexMap<String, Json> = IndexMap::new();
    for (name, value) in &raw.vars {
        if let Some(over) = opts.var_overrides.get(name) {
            vars.insert(name.clone(), over.clone());
            continue;
        }
        let path = join("vars", name);
        // A var may use only the vars declared above it.
        let above: Vec<&str> = raw
            .vars
            .keys()
            .take_while(|k| *k != name)
            .map(String::as_str)
            .collect();
        let scoped = RefChecker {
            vars: above,
            ..checker.clone_without_vars()
        };
        let broken = check_templates(
            value,
            &path,
            Site::Var,
            templates,
            &scoped,
            sink,
            &mut Vec::new(),
            &mut Vec::new(),
        );
        let rendered = if broken.is_empty() {
            let parts = ContextParts {
                vars: &vars,
                objectives: &raw.objectives,
                env,
                secret_names: &[],
            };
            let ctx = build(
                &parts,
                SecretValues::Markers,
                StepValues::Outputs(&IndexMap::new()),
                None,
            );
            match templates.render_json(value, &ctx) {
                Ok(v) => v,
                Err(e) => {
                    sink.at_value(Diagnostic::new(
                        join_rel(&path, &e.path),
                        format!("template error: {}", e.message),
                    ));
                    value.clone()
                }
            }
        } else {
            value.clone()
        };
        vars.insert(name.clone(), rendered);
    }
    // An override of a var the playbook does not declare is a typo (`-e projet=acme`) that
    // would run the drill against the default: refuse it.
    for name in opts.var_overrides.keys() {
        if raw.vars.contains_key(name) {
            continue;
        }
        let origin = opts
            .var_origins
            .get(name)
            .map_or_else(|| "the command line".to_string(), |o| format!("`{o}`"));
        let help = did_you_mean(name, raw.vars.keys().map(String::as_str)).or_else(|| {
            Some(if raw.vars.is_empty() {
                "this playbook declares no vars".to_string()
            } else {
                format!(
                    "the playbook's vars: {}",
                    raw.vars.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })
        });
        sink.at_key(
            Diagnostic::new(
                "vars",
                format!("{origin} sets `{name}`, which is not a var of this playbook"),
            )
            .with_help_opt(help),
        );
    }
    vars
}

/// Each notification URL may use `secrets`, `vars` and `env`, and must use a secret: a
/// URL written in the playbook would be a credential kept in plain text (in git).
pub(super) fn check_notify(
    notify: &crate::playbook::model::Notify,
    templates: &Templates,
    checker: &RefChecker,
    sink: &mut Sink,
) {
    for (field, url) in [
        ("heartbeat", &notify.heartbeat),
        ("slack", &notify.slack),
        ("webhook", &notify.webhook),
    ] {
        let Some(url) = url else { continue };
        let path = format!("notify.{field}");
        let mut dynamic = Vec::new();
        let broken = check_templates(
            &Json::String(url.clone()),
            &path,
            Site::Notify,
            templates,
            checker,
            sink,
            &mut Vec::new(),
            &mut dynamic,
        );
        if broken.is_empty() && !dynamic.iter().any(|(_, u)| *u == Unknown::Secret) {
            sink.at_value(
                Diagnostic::new(
                    path,
                    "a notification URL is a credential: take it from `secrets`, not the playbook",
                )
                .with_help(format!(
                    "declare it, e.g. `secrets: {{ {field}_url: {{ env: DRRUN_{}_URL }} }}`, and write `{field}: \"{{{{ secrets.{field}_url }}}}\"`",
                    field.to_uppercase()
                )),
            );
        }
    }
}

pub(super) fn compile_guards(
    raw: &RawPlaybook,
    templates: &Templates,
    checker: &RefChecker,
    ctx: &minijinja::Value,
    sink: &mut Sink,
) -> Guards {
    let mut render_list = |field: &str, list: &[String]| -> Vec<String> {
        list.iter()
            .enumerate()
            .map(|(i, pattern)| {
                let path = format!("guards.{field}[{i}]");
                let value = Json::String(pattern.clone());
                if !check_templates(
                    &value,
                    &path,
                    Site::Guard,
                    templates,
                    checker,
                    sink,
                    &mut Vec::new(),
                    &mut Vec::new(),
                )
                .is_empty()
                {
                    return pattern.clone();
                }
                match templates.render_json(&value, ctx) {
                    Ok(Json::String(s)) if !s.trim().is_empty() => s,
                    Ok(other) => {
                        sink.at_value(Diagnostic::new(
                            path,
                            format!("a guard must render to a non-empty string, not {other}"),
                        ));
                        pattern.clone()
                    }
                    Err(e) => {
                        sink.at_value(Diagnostic::new(
                            path,
                            format!("template error: {}", e.message),
                        ));
                        pattern.clone()
                    }
                }
            })
            .collect()
    };
    Guards {
        kube_namespaces: render_list("kube_namespaces", &raw.guards.kube_namespaces),
        pg_hosts: render_list("pg_hosts", &raw.guards.pg_hosts),
        pg_databases: render_list("pg_databases", &raw.guards.pg_databases),
    }
}

/// Checks every template inside `value` (found at `path`). Collects the steps referred
/// to and the relative paths whose value is only known at run time. Returns whether
/// every template was valid.
#[allow(clippy::too_many_arguments)]
pub(super) fn check_templates(
    value: &Json,
    path: &str,
    site: Site,
    templates: &Templates,
    checker: &RefChecker,
    sink: &mut Sink,
    step_refs: &mut Vec<String>,
    dynamic: &mut Vec<(String, Unknown)>,
) -> Vec<String> {
    let mut broken = Vec::new();
    let mut strings = Vec::new();
    crate::playbook::template::walk_strings(value, String::new(), &mut |path, text| {
        if is_template(text) {
            strings.push((path, text));
        }
    });
    for (rel, text) in strings {
        let at = join_rel(path, &rel);
        let refs = match templates.references(text) {
            Ok(refs) => refs,
            Err(e) => {
                sink.at_value(Diagnostic::new(at, format!("invalid template: {e}")));
                broken.push(rel);
                continue;
            }
        };
        for reference in refs {
            match checker.check(&reference, site) {
                Ok(Resolved::Static | Resolved::Deferred) => {}
                Ok(Resolved::Secret) => dynamic.push((rel.clone(), Unknown::Secret)),
                Ok(Resolved::Runtime) => dynamic.push((rel.clone(), Unknown::Run)),
                Ok(Resolved::Step(id)) => {
                    dynamic.push((rel.clone(), Unknown::Step(id.clone())));
                    if !step_refs.contains(&id) {
                        step_refs.push(id);
                    }
                }
                Err(e) => {
                    if !e.quiet {
                        sink.at_value(Diagnostic::new(at.clone(), e.message).with_help_opt(e.help));
                    }
                    if !broken.contains(&rel) {
                        broken.push(rel.clone());
                    }
                }
            }
        }
    }
    broken
}

pub(super) use crate::playbook::load::join_rel;
