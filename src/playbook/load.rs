//! Reading a playbook file into a [`RawPlaybook`], collecting every structural problem
//! (syntax, unknown fields, wrong types) as a positioned [`Diagnostic`].

use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::model::{Objectives, RawPlaybook, RawStep, STEP_KEYS, StepCommon, TOP_LEVEL_KEYS};
use super::spans::{Pos, SpanIndex, join};
use super::typing::{Typed, type_all};
use crate::diag::{Diagnostic, did_you_mean};

/// A playbook's text and the name it is reported under.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub name: String,
    pub text: String,
}

/// Collects diagnostics while loading or compiling, positioning each through the span index.
pub(crate) struct Sink<'a> {
    pub source: &'a Source,
    pub spans: &'a SpanIndex,
    pub diags: Vec<Diagnostic>,
}

impl<'a> Sink<'a> {
    pub(crate) fn new(source: &'a Source, spans: &'a SpanIndex) -> Self {
        Self {
            source,
            spans,
            diags: Vec::new(),
        }
    }

    /// An error about the key at `path` (unknown field, unknown step id...).
    pub(crate) fn at_key(&mut self, diag: Diagnostic) {
        let pos = self.spans.key(&diag.path);
        self.push(diag.at(pos));
    }

    /// An error about the value at `path` (wrong type, bad reference...).
    pub(crate) fn at_value(&mut self, diag: Diagnostic) {
        let pos = self.spans.value(&diag.path);
        self.push(diag.at(pos));
    }

    pub(crate) fn at_pos(&mut self, diag: Diagnostic, pos: Pos) {
        self.push(diag.at(pos));
    }

    fn push(&mut self, diag: Diagnostic) {
        let diag = diag.locate(&self.source.name, &self.source.text);
        self.diags.push(diag);
    }

    /// Deserializes `value` (found at `path`) into `T`, every problem a diagnostic; the
    /// value comes back typed without the entries that were wrong, when that can be done.
    pub(crate) fn deserialize<T: DeserializeOwned>(
        &mut self,
        path: &str,
        value: &Value,
    ) -> Option<T> {
        self.deserialize_noting(path, value).value
    }

    /// [`Sink::deserialize`], also saying which entries were taken out as wrong.
    pub(crate) fn deserialize_noting<T: DeserializeOwned>(
        &mut self,
        path: &str,
        value: &Value,
    ) -> Typed<T> {
        let typed = type_all::<T>(value, &|_| false);
        for e in &typed.errors {
            self.serde_error(&join_rel(path, &e.path), &e.message);
        }
        typed
    }

    /// Rewrites serde's messages into ours: unknown fields point at the key and suggest
    /// the closest expected name; everything else points at the value.
    pub(crate) fn serde_error(&mut self, path: &str, message: &str) {
        self.serde_error_with_fields(path, message, &[]);
    }

    /// Like [`Sink::serde_error`], with the valid field names for when serde does not
    /// list them (structs with flattened parts).
    pub(crate) fn serde_error_with_fields(&mut self, path: &str, message: &str, fields: &[String]) {
        let message = plain_types(message.trim());
        let message = message.as_str();
        if let Some((field, mut expected)) = parse_unknown(message, "unknown field `") {
            if expected.is_empty() {
                expected = fields.to_vec();
            }
            // serde_path_to_error already puts the unknown key at the end of the path.
            let field_path = if path.ends_with(&format!(".{field}")) || path == field {
                path.to_string()
            } else {
                join(path, &field)
            };
            let help = did_you_mean(&field, expected.iter().map(String::as_str)).or_else(|| {
                (!expected.is_empty()).then(|| format!("expected one of: {}", expected.join(", ")))
            });
            self.at_key(
                Diagnostic::new(field_path, format!("unknown field `{field}`")).with_help_opt(help),
            );
        } else if let Some((variant, expected)) = parse_unknown(message, "unknown variant `") {
            let help = did_you_mean(&variant, expected.iter().map(String::as_str))
                .or_else(|| Some(format!("expected one of: {}", expected.join(", "))));
            self.at_value(
                Diagnostic::new(path, format!("unknown value `{variant}`")).with_help_opt(help),
            );
        } else if message.starts_with("missing field") {
            self.at_key(Diagnostic::new(path, message.to_string()));
        } else {
            self.at_value(Diagnostic::new(path, message.to_string()));
        }
    }
}

/// `steps.x.with` + `requests[0]` -> `steps.x.with.requests[0]`; `a` + `[1]` -> `a[1]`.
pub(crate) fn join_rel(base: &str, rel: &str) -> String {
    if rel.is_empty() {
        base.to_string()
    } else if rel.starts_with('[') || base.is_empty() {
        format!("{base}{rel}")
    } else {
        format!("{base}.{rel}")
    }
}

/// serde's Rust type names in a message, in the user's words: "expected u32" reads
/// "expected a whole number".
fn plain_types(message: &str) -> String {
    let Some((head, expected)) = message.rsplit_once(", expected ") else {
        return message.to_string();
    };
    let plain = match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number (0 or more)",
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a sequence" => "a list",
        "a map" => "a mapping",
        other => other,
    };
    format!("{head}, expected {plain}")
}

/// `base` extended by a serde path: `steps.x.with` + `requests[0].url`.
pub(crate) fn path_string(base: &str, path: &serde_path_to_error::Path) -> String {
    let mut at = base.to_string();
    for seg in path {
        match seg {
            serde_path_to_error::Segment::Seq { index } => at.push_str(&format!("[{index}]")),
            serde_path_to_error::Segment::Map { key } => at = join(&at, key),
            serde_path_to_error::Segment::Enum { variant } => at = join(&at, variant),
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    at
}

/// Parses "unknown field `x`, expected one of `a`, `b`" into `x` and `[a, b]`.
fn parse_unknown(message: &str, prefix: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix(prefix)?;
    let end = rest.find('`')?;
    let name = rest[..end].to_string();
    // rest[end..] is "`, expected one of `a`, `b`": names sit at odd positions after the first.
    let expected = rest[end..]
        .split('`')
        .skip(2)
        .step_by(2)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    Some((name, expected))
}

/// Parses `source` into a raw playbook. The playbook is `None` only when the document
/// is not YAML at all; otherwise as much as could be read is returned with the problems.
pub(crate) fn parse(source: &Source, spans: &SpanIndex) -> (Option<RawPlaybook>, Vec<Diagnostic>) {
    let mut sink = Sink::new(source, spans);
    let doc: serde_yaml_ng::Value = match serde_yaml_ng::from_str(&source.text) {
        Ok(doc) => doc,
        Err(err) => {
            let pos = err
                .location()
                .map(|l| Pos {
                    line: l.line(),
                    col: l.column(),
                })
                .unwrap_or(Pos { line: 1, col: 1 });
            let message = strip_location(&err.to_string());
            let e = super::yaml_errors::explain(&source.text, &message, pos);
            sink.at_pos(
                Diagnostic::new("", format!("invalid YAML: {}", e.message)).with_help_opt(e.help),
                e.pos,
            );
            return (None, sink.diags);
        }
    };
    let doc: Value = match serde_json::to_value(&doc) {
        Ok(v) => v,
        Err(err) => {
            sink.at_pos(
                Diagnostic::new("", format!("unsupported YAML: {err}")),
                Pos { line: 1, col: 1 },
            );
            return (None, sink.diags);
        }
    };
    let Value::Object(top) = doc else {
        sink.at_value(Diagnostic::new(
            "",
            "a playbook must be a mapping with `version`, `name` and `steps`",
        ));
        return (None, sink.diags);
    };

    let mut pb = RawPlaybook::default();
    for key in top.keys() {
        if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
            let help = did_you_mean(key, TOP_LEVEL_KEYS.iter().copied());
            sink.at_key(
                Diagnostic::new(key.clone(), format!("unknown field `{key}`")).with_help_opt(help),
            );
        }
    }
    match top.get("version") {
        None => sink.at_value(Diagnostic::new(
            "",
            "missing field `version` (this drrun reads `version: 1`)",
        )),
        Some(v) => match v.as_u64() {
            Some(1) => pb.version = 1,
            _ => sink.at_value(Diagnostic::new(
                "version",
                format!("unsupported playbook version {v}; this drrun reads `version: 1`"),
            )),
        },
    }
    match top.get("name") {
        Some(Value::String(name)) if !name.trim().is_empty() => pb.name.clone_from(name),
        Some(_) => sink.at_value(Diagnostic::new("name", "`name` must be a non-empty string")),
        None => sink.at_value(Diagnostic::new("", "missing field `name`")),
    }
    let section = |key: &str| top.get(key).filter(|v| !v.is_null());
    if let Some(v) = section("description") {
        pb.description = sink.deserialize("description", v);
    }
    if let Some(v) = section("vars") {
        pb.vars = sink.deserialize("vars", v).unwrap_or_default();
    }
    if let Some(v) = section("secrets") {
        pb.secrets = sink.deserialize("secrets", v).unwrap_or_default();
    }
    if let Some(v) = section("objectives") {
        let typed = sink.deserialize_noting::<Objectives>("objectives", v);
        pb.objectives = typed.value.unwrap_or_default();
        // An objective written but wrong is reported once, here; what uses it says nothing.
        pb.invalid_objectives = typed.removed;
    }
    if let Some(v) = section("guards") {
        pb.guards = sink.deserialize("guards", v).unwrap_or_default();
    }
    if let Some(v) = section("notify") {
        pb.notify = sink.deserialize("notify", v).unwrap_or_default();
    }
    if let Some(v) = section("defaults") {
        pb.defaults = sink.deserialize("defaults", v).unwrap_or_default();
    }
    match section("steps") {
        Some(v) => pb.steps = parse_steps(&mut sink, "steps", v),
        None => sink.at_value(Diagnostic::new("", "missing field `steps`")),
    }
    if let Some(v) = section("finally") {
        pb.finally = parse_steps(&mut sink, "finally", v);
    }
    for id in pb.finally.keys() {
        if pb.steps.contains_key(id) {
            sink.at_key(Diagnostic::new(
                format!("finally.{id}"),
                format!("step id `{id}` is used in both `steps` and `finally`"),
            ));
        }
    }
    (Some(pb), sink.diags)
}

fn parse_steps(sink: &mut Sink, section: &str, value: &Value) -> IndexMap<String, RawStep> {
    let mut steps = IndexMap::new();
    let Value::Object(map) = value else {
        sink.at_value(Diagnostic::new(
            section,
            format!("`{section}` must be a mapping of step id to step"),
        ));
        return steps;
    };
    for (id, body) in map {
        let path = join(section, id);
        if !is_identifier(id) {
            sink.at_key(
                Diagnostic::new(path.clone(), format!("step id `{id}` is not an identifier"))
                    .with_help("use letters, digits and `_` (templates refer to it as `steps.<id>.outputs`)"),
            );
        }
        let Value::Object(fields) = body else {
            sink.at_value(Diagnostic::new(
                path,
                "a step must be a mapping with at least `kind`",
            ));
            continue;
        };
        let mut common = serde_json::Map::new();
        let mut kind = None;
        let mut with = Value::Object(serde_json::Map::default());
        for (key, v) in fields {
            match key.as_str() {
                "kind" => match v {
                    Value::String(k) => kind = Some(k.clone()),
                    _ => sink.at_value(Diagnostic::new(
                        join(&path, "kind"),
                        "`kind` must be a string such as `exec`",
                    )),
                },
                "with" => match v {
                    Value::Object(_) => with = v.clone(),
                    Value::Null => {}
                    _ => sink.at_value(Diagnostic::new(
                        join(&path, "with"),
                        "`with` must be a mapping of the kind's settings",
                    )),
                },
                k if STEP_KEYS.contains(&k) => {
                    common.insert(key.clone(), v.clone());
                }
                _ => {
                    let help = did_you_mean(key, STEP_KEYS.iter().copied()).or_else(|| {
                        Some(format!(
                            "a step's fields are: {}; the kind's settings go under `with`",
                            STEP_KEYS.join(", ")
                        ))
                    });
                    sink.at_key(
                        Diagnostic::new(join(&path, key), format!("unknown field `{key}`"))
                            .with_help_opt(help),
                    );
                }
            }
        }
        let Some(kind) = kind else {
            sink.at_key(Diagnostic::new(path, "missing field `kind`"));
            continue;
        };
        let common: StepCommon = sink
            .deserialize(&path, &Value::Object(common))
            .unwrap_or_default();
        steps.insert(id.clone(), RawStep { kind, with, common });
    }
    steps
}

pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// serde_yaml appends " at line X column Y" to its messages; we print positions ourselves.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}
