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
        let mut list: Vec<(String, String)> = Vec::new();
        for (name, value) in secrets {
            if value.is_empty() {
                continue;
            }
            let m = marker(&name);
            for form in encodings(&value) {
                if !list.iter().any(|(v, _)| *v == form) {
                    list.push((form, m.clone()));
                }
            }
        }
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

/// Shorter secrets are redacted only as written: their encoded forms are too likely to
/// occur by chance in ordinary text.
const MIN_ENCODED_LEN: usize = 6;

/// The forms a value takes on its way out: as written, URL-encoded (`+` or `%20` for a
/// space, as forms and URLs write it), JSON-escaped, and base64 (standard and URL-safe,
/// with and without padding).
fn encodings(value: &str) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut forms = vec![value.to_string()];
    if value.chars().count() < MIN_ENCODED_LEN {
        return forms;
    }
    let form: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
    forms.push(form.replace('+', "%20"));
    forms.push(form);
    let json = serde_json::to_string(value).unwrap_or_default();
    forms.push(json[1..json.len() - 1].to_string());
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        forms.push(engine.encode(value));
    }
    forms.dedup();
    forms
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

    #[test]
    fn redacts_the_encoded_forms_of_a_secret_too() {
        use base64::Engine as _;
        let pw = "Pw{{x}}9 \"q'&+é漢";
        let r = Redactor::new([("pw".to_string(), pw.to_string())]);
        let form: String = url::form_urlencoded::byte_serialize(pw.as_bytes()).collect();
        let json = serde_json::to_string(pw).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(pw);
        for leaked in [
            pw.to_string(),
            form.clone(),
            form.replace('+', "%20"),
            json.clone(),
            b64,
        ] {
            let text = format!("before {leaked} after");
            let redacted = r.redact(&text);
            assert!(
                redacted.contains("<secret:pw>") && !redacted.contains(leaked.trim_matches('"')),
                "{leaked} -> {redacted}"
            );
        }
        // Short secrets only as written: "abc" URL-encodes to itself, and its base64
        // would match ordinary words.
        let short = Redactor::new([("s".to_string(), "abc".to_string())]);
        assert_eq!(short.redact("YWJj abc"), "YWJj <secret:s>");
    }
}
