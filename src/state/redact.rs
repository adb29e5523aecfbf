//! Keeps secret values out of everything drrun writes: journal, outputs, messages.

/// Replaces every occurrence of a secret's value with `<secret:NAME>`.
#[derive(Debug, Default, Clone)]
pub struct Redactor {
    /// (value, marker), longest value first so overlapping secrets redact fully.
    secrets: Vec<(String, String)>,
}

impl Redactor {
    pub fn new(secrets: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut list: Vec<(String, String)> = secrets
            .into_iter()
            .filter(|(_, value)| !value.is_empty())
            .map(|(name, value)| (value, marker(&name)))
            .collect();
        list.sort_by_key(|(value, _)| std::cmp::Reverse(value.len()));
        Self { secrets: list }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (value, marker) in &self.secrets {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), marker);
            }
        }
        out
    }

    pub fn redact_json(&self, value: &serde_json::Value) -> serde_json::Value {
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
pub fn marker(name: &str) -> String {
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
