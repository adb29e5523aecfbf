//! The playbook JSON schema, generated from the same types the loader uses.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::playbook::model::{Defaults, Guards, Objectives, SecretRef, StepCommon};
use crate::steps::StepConfig;

/// A drrun playbook (format v1): a disaster-recovery drill as a DAG of steps.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "drrun playbook v1")]
#[allow(dead_code)]
struct PlaybookDoc {
    /// Format version; always `1`.
    #[schemars(range(min = 1, max = 1))]
    version: u32,
    /// Name of the drill, shown in reports.
    name: String,
    /// What the drill proves.
    #[serde(default)]
    description: Option<String>,
    /// Values for templates (`{{ vars.project }}`); a var may use the vars above it.
    /// Overridden by `-e key=value` and `--vars-file`.
    #[serde(default)]
    vars: IndexMap<String, serde_json::Value>,
    /// Secrets by name, resolved at run time; never written to state, logs or reports.
    #[serde(default)]
    secrets: IndexMap<String, SecretRef>,
    /// Recovery objectives the drill is measured against.
    #[serde(default)]
    objectives: Objectives,
    /// What no step may ever touch.
    #[serde(default)]
    guards: Guards,
    /// Defaults for every step.
    #[serde(default)]
    defaults: Defaults,
    /// The drill's steps by id (letters, digits, `_`).
    steps: IndexMap<String, StepDoc>,
    /// Steps that run after `steps`, whatever happened (success, failure, Ctrl-C).
    #[serde(default)]
    finally: IndexMap<String, StepDoc>,
}

/// A step: its `kind`, the kind's settings under `with`, and the common fields.
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
struct StepDoc {
    #[serde(flatten)]
    common: StepCommon,
    #[serde(flatten)]
    config: StepConfig,
}

pub(crate) fn playbook_schema() -> serde_json::Value {
    let schema = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<PlaybookDoc>();
    serde_json::to_value(schema).expect("schema serializes")
}

pub(crate) fn playbook_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&playbook_schema()).expect("schema serializes");
    text.push('\n');
    text
}

/// The JSON schema of one kind's `with`, for `drrun kinds KIND`.
pub(crate) fn kind_schema(kind: &crate::steps::KindInfo) -> serde_json::Value {
    let mut generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let schema = (kind.schema)(&mut generator);
    let mut value = serde_json::to_value(schema).expect("schema serializes");
    // Resolve the top-level `$ref` so callers see the properties directly.
    let defs = serde_json::to_value(generator.take_definitions(true)).unwrap_or_default();
    if let Some(name) = value
        .get("$ref")
        .and_then(|r| r.as_str())
        .and_then(|r| r.rsplit('/').next())
        && let Some(def) = defs.get(name)
    {
        value = def.clone();
    }
    serde_json::json!({ "schema": value, "definitions": defs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_top_level_keys_match_the_loader() {
        let schema = playbook_schema();
        let props: Vec<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(props, crate::playbook::model::TOP_LEVEL_KEYS);
    }
}
