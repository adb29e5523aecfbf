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
    })
}

/// (name, type, required, description) for every field of the kind's `with`.
fn settings(kind: &KindInfo) -> Vec<Value> {
    let doc = crate::schema::kind_schema(kind);
    let schema = &doc["schema"];
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
                        "type": type_name(p),
                        "required": required.contains(&name.as_str()),
                        "description": p["description"].as_str().unwrap_or("").replace('\n', " "),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn type_name(p: &Value) -> String {
    // schemars wraps a documented `$ref` in `allOf: [{$ref}]`.
    if let Some(inner) = p["allOf"].as_array().and_then(|a| a.first()) {
        return type_name(inner);
    }
    if let Some(r) = p["$ref"].as_str() {
        return r.rsplit('/').next().unwrap_or(r).to_string();
    }
    if let Some(t) = p["type"].as_str() {
        if t == "array" {
            return format!("list of {}", type_name(&p["items"]));
        }
        return t.to_string();
    }
    if let Some(types) = p["type"].as_array() {
        let names: Vec<&str> = types
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect();
        if names == ["array"] {
            return format!("list of {}", type_name(&p["items"]));
        }
        return names.join(" or ");
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(options) = p[key].as_array() {
            let names: Vec<String> = options
                .iter()
                .filter(|o| o["type"] != "null")
                .map(type_name)
                .collect();
            return names.join(" or ");
        }
    }
    if p.get("enum").is_some() {
        return "enum".into();
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
    text.push_str("| setting | type | required | description |\n|---|---|---|---|\n");
    for s in settings(kind) {
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
    text.push_str("\n| output | description |\n|---|---|\n");
    for o in kind.outputs {
        text.push_str(&format!("| `{}` | {} |\n", o.name, o.doc));
    }
    text.push_str(&format!("\nExample:\n\n```yaml\n{}```\n", kind.example));
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
