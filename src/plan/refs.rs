//! Checking what a template refers to, with messages that say what to write instead.

use std::collections::HashMap;

use crate::diag::{closest, did_you_mean};
use crate::playbook::template::GLOBAL_FUNCTIONS;
use crate::steps::KindInfo;

use super::Phase;

/// Fields of `run` in the template context.
pub(super) const RUN_FIELDS: &[&str] = &["id", "started_at", "dry_run", "playbook", "status"];
const ROOTS: &[&str] = &["vars", "secrets", "objectives", "steps", "run", "env"];

/// Where a template sits, which decides what it may use.
#[derive(Debug, Clone, Copy)]
pub(super) enum Site<'a> {
    /// A `vars` entry: earlier vars and env only.
    Var,
    /// A guard pattern: vars and env only.
    Guard,
    /// A notification URL: vars, env and secrets (it is known when the run starts).
    Notify,
    /// A step's `with` or `when`.
    Step {
        id: &'a str,
        phase: Phase,
        kind: Option<&'static KindInfo>,
    },
}

/// What a reference resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Resolved {
    /// Known before the run starts (vars, objectives, env).
    Static,
    /// Known when the run starts: a secret.
    Secret,
    /// Known only while running: the `run` fields.
    Runtime,
    /// Rendered by the step's kind itself while it runs (`captures`).
    Deferred,
    /// The outputs of this step.
    Step(String),
}

pub(super) struct RefError {
    pub message: String,
    pub help: Option<String>,
    /// The cause was reported already (an invalid objective, a step of an unknown kind):
    /// the template cannot be rendered, but one mistake gets one message.
    pub quiet: bool,
}

fn err(message: String, help: Option<String>) -> RefError {
    RefError {
        message,
        help,
        quiet: false,
    }
}

fn quiet(message: String) -> RefError {
    RefError {
        message,
        help: None,
        quiet: true,
    }
}

pub(super) struct RefChecker<'a> {
    pub vars: Vec<&'a str>,
    pub secrets: Vec<&'a str>,
    pub objectives: Vec<&'static str>,
    /// Objectives written but invalid.
    pub invalid_objectives: Vec<&'a str>,
    pub env: Vec<&'a str>,
    /// Step id -> (phase, kind, when known).
    pub steps: HashMap<&'a str, (Phase, Option<&'static KindInfo>)>,
}

impl RefChecker<'_> {
    pub(super) fn clone_without_vars(&self) -> Self {
        Self {
            vars: Vec::new(),
            secrets: self.secrets.clone(),
            objectives: self.objectives.clone(),
            invalid_objectives: self.invalid_objectives.clone(),
            env: self.env.clone(),
            steps: self.steps.clone(),
        }
    }

    pub(super) fn check(&self, reference: &str, site: Site) -> Result<Resolved, RefError> {
        let parts: Vec<&str> = reference.split('.').collect();
        let root = parts[0];
        let second = parts.get(1).copied();
        match root {
            "vars" => {
                let Some(name) = second else { return Ok(Resolved::Static) };
                if self.vars.contains(&name) {
                    Ok(Resolved::Static)
                } else if matches!(site, Site::Var) {
                    Err(err(
                        format!("undefined variable `vars.{name}`"),
                        suggest("vars", name, &self.vars).or_else(|| Some("a var can only use vars defined above it".into())),
                    ))
                } else {
                    Err(err(format!("undefined variable `vars.{name}`"), suggest("vars", name, &self.vars)))
                }
            }
            "secrets" | "steps" | "run" if matches!(site, Site::Var | Site::Guard) => Err(err(
                format!("`{reference}` cannot be used here"),
                Some("vars and guards are resolved before the run starts: they can use `vars` and `env` only".into()),
            )),
            "steps" | "run" if matches!(site, Site::Notify) => Err(err(
                format!("`{reference}` cannot be used here"),
                Some("notification URLs are known when the run starts: they can use `secrets`, `vars` and `env`".into()),
            )),
            "secrets" => {
                let Some(name) = second else {
                    return Err(err("refer to one secret at a time: `secrets.<name>`".into(), None));
                };
                if self.secrets.contains(&name) {
                    Ok(Resolved::Secret)
                } else {
                    Err(err(
                        format!("undeclared secret `secrets.{name}`"),
                        suggest("secrets", name, &self.secrets).or_else(|| Some(format!("declare it under `secrets:`, e.g. `{name}: {{ env: {} }}`", name.to_uppercase()))),
                    ))
                }
            }
            "objectives" => {
                let Some(name) = second else { return Ok(Resolved::Static) };
                if self.objectives.contains(&name) {
                    Ok(Resolved::Static)
                } else if self.invalid_objectives.contains(&name) {
                    Err(quiet(format!("`objectives.{name}` is invalid")))
                } else if ["rpo", "rto"].contains(&name) {
                    Err(err(format!("`objectives.{name}` is not set"), Some(format!("add `objectives: {{ {name}: 26h }}`"))))
                } else {
                    Err(err(format!("unknown objective `objectives.{name}`"), suggest("objectives", name, &["rpo", "rto"])))
                }
            }
            "run" => match second {
                Some(name) if !RUN_FIELDS.contains(&name) => Err(err(format!("unknown field `run.{name}`"), suggest("run", name, RUN_FIELDS))),
                _ => Ok(Resolved::Runtime),
            },
            "env" => {
                let Some(name) = second else { return Ok(Resolved::Static) };
                if self.env.contains(&name) {
                    Ok(Resolved::Static)
                } else {
                    Err(err(
                        format!("`env.{name}` is not available"),
                        Some(format!("pass `--env-allow {name}`, or declare a secret `{{ env: {name} }}` if it is one")),
                    ))
                }
            }
            "steps" => self.check_step_ref(reference, &parts, site),
            _ if GLOBAL_FUNCTIONS.contains(&root) => Ok(Resolved::Static),
            _ if matches!(site, Site::Step { kind: Some(k), .. } if k.deferred.contains(&root)) => {
                Ok(Resolved::Deferred)
            }
            _ if let Some(kinds) = deferring_kinds(root) => Err(err(
                format!("undefined variable `{reference}`"),
                Some(format!("`{root}` exist only inside the settings of {kinds} steps")),
            )),
            _ => Err(err(
                format!("undefined variable `{root}`"),
                did_you_mean(root, ROOTS.iter().copied()).or_else(|| Some(format!("templates can use: {}", ROOTS.join(", ")))),
            )),
        }
    }

    fn check_step_ref(
        &self,
        reference: &str,
        parts: &[&str],
        site: Site,
    ) -> Result<Resolved, RefError> {
        let Site::Step {
            id: here,
            phase: here_phase,
            ..
        } = site
        else {
            unreachable!("handled by the caller")
        };
        let Some(target) = parts.get(1).copied() else {
            return Err(err(
                "refer to a step's outputs as `steps.<id>.outputs.<name>`".into(),
                None,
            ));
        };
        let Some((phase, kind)) = self.steps.get(target) else {
            let ids: Vec<&str> = self.steps.keys().copied().collect();
            return Err(err(
                format!("unknown step `{target}` in `{reference}`"),
                suggest_plain(target, &ids),
            ));
        };
        if target == here {
            return Err(err(
                format!("step `{here}` refers to its own outputs"),
                None,
            ));
        }
        if *phase == Phase::Finally && here_phase == Phase::Main {
            return Err(err(
                format!(
                    "`{reference}`: a step cannot use the outputs of `finally` step `{target}`"
                ),
                Some("finally steps run after all steps".into()),
            ));
        }
        match parts.get(2).copied() {
            Some("outputs") => {}
            Some(other) => {
                return Err(err(
                    format!("`steps.{target}.{other}` is not available"),
                    Some(format!(
                        "refer to the outputs as `steps.{target}.outputs.<name>`"
                    )),
                ));
            }
            None => {
                return Err(err(
                    format!("refer to an output of `{target}`: `steps.{target}.outputs.<name>`"),
                    None,
                ));
            }
        }
        let Some(kind) = kind else {
            return Err(quiet(format!("step `{target}` has an unknown kind")));
        };
        if let Some(name) = parts.get(3).copied()
            && !kind.has_output(name)
        {
            let names: Vec<&str> = kind.outputs.iter().map(|o| o.name).collect();
            return Err(err(
                format!(
                    "`{}` steps have no output `{name}` (in `{reference}`)",
                    kind.name
                ),
                did_you_mean(name, names.iter().copied())
                    .or_else(|| Some(format!("outputs of `{}`: {}", kind.name, names.join(", ")))),
            ));
        }
        Ok(Resolved::Step(target.to_string()))
    }
}

/// The kinds that render `root` themselves, when any does: "`http.smoke`".
fn deferring_kinds(root: &str) -> Option<String> {
    let names: Vec<String> = crate::steps::KINDS
        .iter()
        .filter(|k| k.deferred.contains(&root))
        .map(|k| format!("`{}`", k.name))
        .collect();
    (!names.is_empty()).then(|| names.join(", "))
}

fn suggest(root: &str, name: &str, candidates: &[&str]) -> Option<String> {
    closest(name, candidates.iter().copied()).map(|best| format!("did you mean `{root}.{best}`?"))
}

fn suggest_plain(name: &str, candidates: &[&str]) -> Option<String> {
    did_you_mean(name, candidates.iter().copied())
}
