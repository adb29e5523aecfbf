//! The playbook JSON schema, generated from the same types the loader uses.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::playbook::model::{Defaults, Guards, Notify, Objectives, SecretRef, StepCommon};
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
    /// Who hears about a drill: heartbeat pings, a Slack message, a JSON webhook.
    #[serde(default)]
    notify: Notify,
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

/// The schema's identity. drrun has no web site to serve it from, so it is a name (a URN),
/// not an address: editors are pointed at a file (`drrun schema > FILE`, see the README).
pub(crate) const SCHEMA_ID: &str = "urn:drrun:schema:playbook:v1";

pub(crate) fn playbook_schema() -> serde_json::Value {
    let schema = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<PlaybookDoc>();
    let mut value = serde_json::to_value(schema).expect("schema serializes");
    let object = value.as_object_mut().expect("the schema is an object");
    object.shift_insert(1, "$id".into(), SCHEMA_ID.into());
    if let Some(defs) = object.get_mut("definitions") {
        if let Some(step) = defs.get_mut("StepDoc") {
            close_step(step);
        }
        allow_templates(defs);
    }
    value
}

/// A setting typed as a number or a boolean may also be written as a template
/// (`replicas: "{{ vars.replicas }}"`), which the loader renders before typing it.
fn allow_templates(node: &mut serde_json::Value) {
    match node {
        serde_json::Value::Object(map) => {
            let scalar = |t: &serde_json::Value| {
                matches!(t.as_str(), Some("integer" | "number" | "boolean"))
            };
            let takes_text = match map.get("type") {
                Some(serde_json::Value::Array(types)) => types.iter().any(|t| t == "string"),
                Some(t) => !scalar(t),
                None => true,
            };
            if !takes_text {
                let description = map.remove("description");
                let original = serde_json::Value::Object(std::mem::take(map));
                map.insert(
                    "anyOf".into(),
                    serde_json::json!([
                        original,
                        { "type": "string", "pattern": "\\{\\{.*\\}\\}" }
                    ]),
                );
                if let Some(d) = description {
                    map.insert("description".into(), d);
                }
                return;
            }
            for v in map.values_mut() {
                allow_templates(v);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(allow_templates),
        _ => {}
    }
}

/// schemars writes a step (common fields flattened beside the tagged kind) as
/// `properties` plus a `oneOf` per kind, which cannot refuse unknown fields: `need:` would
/// pass an editor. Rewritten as one closed object whose `with` depends on `kind`.
fn close_step(step: &mut serde_json::Value) {
    let Some(variants) = step.get("oneOf").and_then(|v| v.as_array()).cloned() else {
        return;
    };
    let mut kinds = Vec::new();
    let mut rules = Vec::new();
    for variant in &variants {
        let props = &variant["properties"];
        let Some(kind) = props["kind"]["const"].as_str() else {
            continue;
        };
        kinds.push(serde_json::Value::from(kind));
        rules.push(serde_json::json!({
            "if": { "properties": { "kind": { "const": kind } }, "required": ["kind"] },
            "then": { "properties": { "with": props["with"].clone() } }
        }));
    }
    let object = step.as_object_mut().expect("a step's schema is an object");
    object.remove("oneOf");
    let properties = object
        .entry("properties")
        .or_insert_with(|| serde_json::json!({}));
    properties["kind"] = serde_json::json!({
        "description": "The step kind (`drrun kinds` lists them).",
        "enum": kinds,
    });
    properties["with"] = serde_json::json!({
        "description": "The kind's settings (`drrun kinds KIND`).",
        "type": ["object", "null"],
    });
    object.insert("required".into(), serde_json::json!(["kind"]));
    object.insert("additionalProperties".into(), false.into());
    object.insert("allOf".into(), rules.into());
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

    #[test]
    fn a_step_is_closed_and_its_with_follows_its_kind() {
        let schema = playbook_schema();
        assert_eq!(schema["$id"], SCHEMA_ID);
        let step = &schema["definitions"]["StepDoc"];
        assert_eq!(step["additionalProperties"], false);
        let mut keys: Vec<&str> = step["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut expected = crate::playbook::model::STEP_KEYS.to_vec();
        expected.sort_unstable();
        assert_eq!(keys, expected);
        let rules = step["allOf"].as_array().unwrap();
        assert_eq!(rules.len(), crate::steps::KINDS.len());
        assert_eq!(rules[1]["if"]["properties"]["kind"]["const"], "s3.fetch");
        assert_eq!(
            rules[1]["then"]["properties"]["with"]["$ref"],
            "#/definitions/S3Fetch"
        );
    }
}
