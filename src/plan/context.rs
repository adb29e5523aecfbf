//! The template context: `vars`, `secrets`, `objectives`, `steps`, `run`, `env`.
//!
//! Built in three flavours: previews (secrets as `<secret:NAME>`, step outputs and run
//! fields as `<steps.x.outputs.y>` placeholders), the redacted run view (real outputs,
//! secret markers: what fingerprints and the journal see) and the real run view.

use indexmap::IndexMap;
use minijinja::Value;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::Plan;
use crate::outcome::Outputs;
use crate::playbook::model::Objectives;
use crate::playbook::template::{Deferred, Placeholder, to_value};
use crate::secrets::marker;
use crate::steps::KindInfo;

/// `run.*` in templates.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunInfo {
    pub id: String,
    pub started_at: String,
    pub dry_run: bool,
    pub playbook: String,
    /// `running` during the main phase; in `finally`: `passed`, `failed` or `interrupted`.
    pub status: String,
}

pub(crate) enum SecretValues<'a> {
    Markers,
    Real(&'a IndexMap<String, String>),
}

pub(crate) enum StepValues<'a> {
    /// Every step's declared outputs as placeholders, except the outputs already known
    /// (a live `plan` learns those from read-only steps' previews).
    Placeholders(
        &'a [(&'a str, &'static KindInfo)],
        &'a IndexMap<String, Outputs>,
    ),
    Outputs(&'a IndexMap<String, Outputs>),
}

pub(crate) struct ContextParts<'a> {
    pub vars: &'a IndexMap<String, Json>,
    pub objectives: &'a Objectives,
    pub env: &'a IndexMap<String, String>,
    pub secret_names: &'a [&'a str],
}

pub(crate) fn objectives_json(objectives: &Objectives) -> Json {
    serde_json::to_value(objectives).unwrap_or(Json::Null)
}

pub(crate) fn build(
    parts: &ContextParts,
    secrets: SecretValues,
    steps: StepValues,
    run: Option<&RunInfo>,
) -> Value {
    let secrets_value = match secrets {
        SecretValues::Markers => Value::from_pairs(
            parts
                .secret_names
                .iter()
                .map(|n| (n.to_string(), Value::from(marker(n)))),
        ),
        SecretValues::Real(values) => to_value(values),
    };
    let steps_value = match steps {
        StepValues::Placeholders(list, known) => {
            Value::from_pairs(list.iter().map(|(id, kind)| {
                let real = known.get(*id);
                let outputs = Value::from_pairs(kind.outputs.iter().map(|o| {
                    let value = match real.and_then(|r| r.get(o.name)) {
                        Some(v) => to_value(v),
                        None => Placeholder::value(format!("steps.{id}.outputs.{}", o.name)),
                    };
                    (o.name.to_string(), value)
                }));
                (id.to_string(), Value::from_pairs([("outputs", outputs)]))
            }))
        }
        StepValues::Outputs(done) => Value::from_pairs(done.iter().map(|(id, outputs)| {
            (
                id.clone(),
                Value::from_pairs([("outputs", to_value(outputs))]),
            )
        })),
    };
    let run_value = match run {
        Some(info) => to_value(info),
        None => Value::from_pairs(
            super::refs::RUN_FIELDS
                .iter()
                .map(|f| (f.to_string(), Placeholder::value(format!("run.{f}")))),
        ),
    };
    let mut roots = vec![
        ("vars", to_value(parts.vars)),
        ("objectives", to_value(objectives_json(parts.objectives))),
        ("env", to_value(parts.env)),
        ("secrets", secrets_value),
        ("steps", steps_value),
        ("run", run_value),
    ];
    // Roots that kinds render themselves while they run (`captures` of `http.smoke`)
    // stay as they are written.
    for root in crate::steps::KINDS.iter().flat_map(|k| k.deferred) {
        if !roots.iter().any(|(r, _)| r == root) {
            roots.push((root, Deferred::value(*root)));
        }
    }
    Value::from_pairs(roots)
}

impl Plan {
    pub(crate) fn secret_names(&self) -> Vec<&str> {
        self.secrets.keys().map(String::as_str).collect()
    }

    /// Context for previews: nothing real beyond vars, objectives, env and the outputs
    /// that read-only previews already found (`known`).
    pub(crate) fn preview_context(&self, known: &IndexMap<String, Outputs>) -> Value {
        self.preview_context_with(SecretValues::Markers, known)
    }

    /// Preview context with real secrets, for live previews that must connect.
    pub(crate) fn preview_context_with(
        &self,
        secrets: SecretValues,
        known: &IndexMap<String, Outputs>,
    ) -> Value {
        let names = self.secret_names();
        let kinds: Vec<(&str, &'static KindInfo)> =
            self.steps.iter().map(|s| (s.id.as_str(), s.kind)).collect();
        let parts = ContextParts {
            vars: &self.vars,
            objectives: &self.objectives,
            env: &self.env,
            secret_names: &names,
        };
        build(
            &parts,
            secrets,
            StepValues::Placeholders(&kinds, known),
            None,
        )
    }

    /// Context while running, with secrets either real or as markers.
    pub(crate) fn run_context(
        &self,
        secrets: SecretValues,
        outputs: &IndexMap<String, Outputs>,
        run: &RunInfo,
    ) -> Value {
        let names = self.secret_names();
        let parts = ContextParts {
            vars: &self.vars,
            objectives: &self.objectives,
            env: &self.env,
            secret_names: &names,
        };
        build(&parts, secrets, StepValues::Outputs(outputs), Some(run))
    }
}
