//! A step's fingerprint: sha256 over its kind and rendered inputs, with secrets as
//! `<secret:NAME>` markers (never values) and object keys sorted, so the same inputs
//! always give the same fingerprint.

use serde_json::Value;
use sha2::{Digest, Sha256};

pub(crate) fn fingerprint(kind: &str, redacted_inputs: &Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(kind.as_bytes());
    hasher.update([0]);
    hasher.update(canonical(redacted_inputs).as_bytes());
    hex::encode(&hasher.finalize()[..16])
}

fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let body: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", Value::String((*k).clone()), canonical(&map[*k])))
                .collect();
            format!("{{{}}}", body.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_does_not_matter_values_do() {
        let a = fingerprint("exec", &json!({"argv": ["a"], "env": {"X": "1", "Y": "2"}}));
        let b = fingerprint("exec", &json!({"env": {"Y": "2", "X": "1"}, "argv": ["a"]}));
        let c = fingerprint("exec", &json!({"env": {"Y": "2", "X": "3"}, "argv": ["a"]}));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(
            a,
            fingerprint(
                "pg.sql",
                &json!({"argv": ["a"], "env": {"X": "1", "Y": "2"}})
            )
        );
    }
}
