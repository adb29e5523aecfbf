//! `drrun kinds [KIND]`: the registry, documented from the code.

use std::process::ExitCode;

use anyhow::Result;
use serde_json::{Value, json};

use crate::cli::{KindsArgs, Output};
use crate::diag::did_you_mean;
use crate::error::Error;
use crate::report::printer::out;
use crate::steps::{KINDS, KindInfo, find_kind};

pub(super) fn kinds(args: KindsArgs) -> Result<ExitCode> {
    if args.all {
        match args.output {
            Output::Json => {
                let list: Vec<Value> = KINDS.iter().map(kind_json).collect();
                out(&serde_json::to_string_pretty(&list)?);
            }
            Output::Human => out(&reference()),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(name) = args.kind else {
        match args.output {
            Output::Json => {
                let list: Vec<Value> = KINDS.iter().map(kind_json).collect();
                out(&serde_json::to_string_pretty(&list)?);
            }
            Output::Human => {
                let w = KINDS.iter().map(|k| k.name.len()).max().unwrap_or(0);
                let mut text = String::new();
                for k in KINDS {
                    text.push_str(&format!(
                        "{:w$}  {:11}  {}\n",
                        k.name,
                        k.effect.as_str(),
                        k.summary
                    ));
                }
                out(&text);
            }
        }
        return Ok(ExitCode::SUCCESS);
    };
    let Some(kind) = find_kind(&name) else {
        let help = did_you_mean(&name, KINDS.iter().map(|k| k.name))
            .map(|h| format!("; {h}"))
            .unwrap_or_default();
        return Err(Error::Usage(format!("unknown step kind `{name}`{help}")).into());
    };
    match args.output {
        Output::Json => out(&serde_json::to_string_pretty(&kind_json(kind))?),
        Output::Human => out(&markdown(kind)),
    }
    Ok(ExitCode::SUCCESS)
}

fn kind_json(kind: &KindInfo) -> Value {
    json!({
        "name": kind.name,
        "summary": kind.summary,
        "effect": kind.effect,
        "example": kind.example,
        "outputs": kind.outputs,
        "settings": settings(kind),
        "types": nested_types(kind),
    })
}

/// (name, type, required, description) for every field of the kind's `with`.
fn settings(kind: &KindInfo) -> Vec<Value> {
    let doc = crate::schema::kind_schema(kind);
    fields(&doc["schema"], &doc["definitions"])
}

/// (name, type, required, description) for every property of an object schema.
fn fields(schema: &Value, defs: &Value) -> Vec<Value> {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    schema["properties"]
        .as_object()
        .map(|props| {
            props
                .iter()
                .map(|(name, p)| {
                    json!({
                        "name": name,
                        "type": type_name(p, defs),
                        "required": required.contains(&name.as_str()),
                        "description": p["description"].as_str().unwrap_or("").replace('\n', " "),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The object types the kind's settings use (`Request`, `Capture`, …), in the order a
/// reader meets them, each with its description and fields.
fn nested_types(kind: &KindInfo) -> Vec<Value> {
    let doc = crate::schema::kind_schema(kind);
    let defs = &doc["definitions"];
    let mut order: Vec<String> = Vec::new();
    visit(&doc["schema"], defs, &mut order);
    order
        .iter()
        .map(|name| {
            json!({
                "name": name,
                "description": defs[name]["description"].as_str().unwrap_or("").replace('\n', " "),
                "fields": fields(&defs[name], defs),
            })
        })
        .collect()
}

/// Depth-first, in property order: each object type once, where it is first used.
fn visit(schema: &Value, defs: &Value, order: &mut Vec<String>) {
    let mut found = Vec::new();
    refs(schema, &mut found);
    for name in found {
        let def = &defs[&name];
        if order.contains(&name) {
            continue;
        }
        if def["properties"].is_object() {
            order.push(name.clone());
        }
        visit(def, defs, order);
    }
}

fn refs(schema: &Value, out: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(r) = map.get("$ref").and_then(Value::as_str) {
                out.push(r.rsplit('/').next().unwrap_or(r).to_string());
            }
            for v in map.values() {
                refs(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// A reader's name for a setting's type: `string`, `list of Request`, `map of Capture`,
/// `CssAssert or list of CssAssert`, `` `png` or `text` ``.
fn type_name(p: &Value, defs: &Value) -> String {
    // schemars wraps a documented `$ref` in `allOf: [{$ref}]`.
    if let Some(inner) = p["allOf"].as_array().and_then(|a| a.first()) {
        return type_name(inner, defs);
    }
    if let Some(r) = p["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap_or(r);
        let def = &defs[name];
        // Object types are documented under their own name; anything else (one-or-many,
        // enums, durations) reads better spelled out, unless it is a named scalar.
        let scalar = def["type"].is_string() && def["type"] != "object" && def["type"] != "array"
            || def["type"].is_array();
        if def["enum"].is_array() {
            return type_name(def, defs);
        }
        if def["properties"].is_object() || def.is_null() || scalar {
            return name.to_string();
        }
        return type_name(def, defs);
    }
    if let Some(values) = p["enum"].as_array() {
        let names: Vec<String> = values
            .iter()
            .filter_map(Value::as_str)
            .map(|v| format!("`{v}`"))
            .collect();
        return names.join(" or ");
    }
    let list_or_map = |t: &str| -> Option<String> {
        match t {
            "array" => Some(format!("list of {}", type_name(&p["items"], defs))),
            "object" if p["additionalProperties"].is_object() => Some(format!(
                "map of {}",
                type_name(&p["additionalProperties"], defs)
            )),
            _ => None,
        }
    };
    if let Some(t) = p["type"].as_str() {
        return list_or_map(t).unwrap_or_else(|| t.to_string());
    }
    if let Some(types) = p["type"].as_array() {
        let names: Vec<&str> = types
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect();
        if let [one] = names.as_slice()
            && let Some(t) = list_or_map(one)
        {
            return t;
        }
        return names.join(" or ");
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(options) = p[key].as_array() {
            let names: Vec<String> = options
                .iter()
                .filter(|o| o["type"] != "null")
                .map(|o| type_name(o, defs))
                .collect();
            return names.join(" or ");
        }
    }
    "any".into()
}

/// The kind's documentation as Markdown (also used to generate the README's kind docs).
pub(super) fn markdown(kind: &KindInfo) -> String {
    let mut text = format!(
        "## `{}`\n\n{}\n\nEffect: **{}**\n\n",
        kind.name,
        kind.summary,
        kind.effect.as_str()
    );
    text.push_str(&table("setting", &settings(kind)));
    for t in nested_types(kind) {
        text.push_str(&format!(
            "\n#### `{}`\n\n",
            t["name"].as_str().unwrap_or("")
        ));
        if let Some(d) = t["description"].as_str().filter(|d| !d.is_empty()) {
            text.push_str(d);
            text.push_str("\n\n");
        }
        text.push_str(&table(
            "field",
            t["fields"].as_array().map_or(&[][..], Vec::as_slice),
        ));
    }
    text.push_str("\n| output | description |\n|---|---|\n");
    for o in kind.outputs {
        text.push_str(&format!("| `{}` | {} |\n", o.name, o.doc));
    }
    text.push_str(&format!("\nExample:\n\n```yaml\n{}```\n", kind.example));
    text
}

fn table(what: &str, rows: &[Value]) -> String {
    let mut text = format!("| {what} | type | required | description |\n|---|---|---|---|\n");
    for s in rows {
        text.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            s["name"].as_str().unwrap_or(""),
            s["type"].as_str().unwrap_or(""),
            if s["required"].as_bool().unwrap_or(false) {
                "yes"
            } else {
                ""
            },
            s["description"].as_str().unwrap_or("").replace('|', "\\|"),
        ));
    }
    text
}

/// docs/kinds.md: every kind, generated from the code (a test keeps the file current).
fn reference() -> String {
    let mut text = String::from(
        "# Step kinds\n\n<!-- Generated by `drrun kinds --all > docs/kinds.md`; do not edit. -->\n\n\
         Every setting and output below comes from the code. The examples are checked by a test \
         that validates them together as one playbook. Effect classes decide retries: `read` and \
         `idempotent` steps are retried after timeouts and ambiguous failures, `destructive` ones \
         only when `retry.on` says so.\n\n",
    );
    for kind in KINDS {
        text.push_str(&format!(
            "- [`{}`](#{}): {}\n",
            kind.name,
            kind.name.replace('.', ""),
            kind.summary
        ));
    }
    for kind in KINDS {
        text.push('\n');
        text.push_str(&markdown(kind));
    }
    text
}
