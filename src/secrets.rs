//! Secrets: read from where the playbook says at run time, held in memory only, and kept
//! out of everything drrun writes (journal, outputs, messages) by the [`Redactor`].

use std::path::Path;

use indexmap::IndexMap;

use crate::playbook::model::SecretRef;

/// A secret that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secret `{name}`: {message}")]
pub(crate) struct SecretError {
    pub(crate) name: String,
    pub(crate) message: String,
}

/// Reads every declared secret. Values stay in memory for this process only. Every
/// secret that cannot be read is reported, not just the first.
pub(crate) fn resolve(
    secrets: &IndexMap<String, SecretRef>,
    base_dir: &Path,
) -> Result<IndexMap<String, String>, Vec<SecretError>> {
    let mut values = IndexMap::new();
    let mut errors = Vec::new();
    for (name, source) in secrets {
        match read(source, base_dir) {
            Ok(value) => {
                values.insert(name.clone(), value);
            }
            Err(message) => errors.push(SecretError {
                name: name.clone(),
                message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(errors)
    }
}

fn read(source: &SecretRef, base_dir: &Path) -> Result<String, String> {
    match source {
        SecretRef::Env(var) => {
            std::env::var(var).map_err(|_| format!("environment variable `{var}` is not set"))
        }
        SecretRef::File(path) => {
            let p = crate::util::resolve_path(base_dir, path);
            let text = std::fs::read_to_string(&p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            Ok(text
                .strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(&text)
                .to_string())
        }
    }
}

/// Replaces every occurrence of a secret's value with `<secret:NAME>`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Redactor {
    /// (value, marker), longest value first so overlapping secrets redact fully.
    secrets: Vec<(String, String)>,
}

impl Redactor {
    pub(crate) fn new(secrets: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut list: Vec<(String, String)> = secrets
            .into_iter()
            .filter(|(_, value)| !value.is_empty())
            .map(|(name, value)| (value, marker(&name)))
            .collect();
        list.sort_by_key(|(value, _)| std::cmp::Reverse(value.len()));
        Self { secrets: list }
    }

    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (value, marker) in &self.secrets {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), marker);
            }
        }
        out
    }

    pub(crate) fn redact_json(&self, value: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match value {
            Value::String(s) => Value::String(self.redact(s)),
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.redact_json(v)).collect())
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.redact_json(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// How a secret appears wherever its value must not.
pub(crate) fn marker(name: &str) -> String {
    format!("<secret:{name}>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_every_occurrence_longest_first() {
        let r = Redactor::new([
            ("pw".to_string(), "hunter2".to_string()),
            ("url".to_string(), "postgres://u:hunter2@h/db".to_string()),
        ]);
        assert_eq!(
            r.redact("connect postgres://u:hunter2@h/db with hunter2"),
            "connect <secret:url> with <secret:pw>"
        );
        assert_eq!(
            r.redact_json(&serde_json::json!({"a": ["hunter2"]})),
            serde_json::json!({"a": ["<secret:pw>"]})
        );
    }
}
