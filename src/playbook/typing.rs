//! Typing a part of a playbook with every problem found, not only the first: serde stops at
//! the first error, so after each one the offending entry is taken out and typing is tried
//! again. One misspelt field never hides a bad value beside it.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::load::path_string;
use super::spans::join;

/// Rounds of typing before giving up (each takes out one entry).
const MAX_ROUNDS: usize = 64;

/// One problem found while typing, at a path relative to the typed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TypeError {
    pub path: String,
    pub message: String,
}

/// What typing found.
#[derive(Debug)]
pub(crate) struct Typed<T> {
    /// The value typed without the entries that were wrong, when that could be done.
    pub value: Option<T>,
    /// Every problem, in the order serde met them.
    pub errors: Vec<TypeError>,
    /// The paths (relative, as written) of the entries taken out.
    pub removed: Vec<String>,
}

/// Types `value` as `T`, collecting every error. `quiet(path)` says an error there is not
/// to be reported (a value known only later, or one already reported as a broken template);
/// its entry is still taken out so typing can go on.
pub(crate) fn type_all<T: DeserializeOwned>(
    value: &Value,
    quiet: &dyn Fn(&str) -> bool,
) -> Typed<T> {
    let mut current = value.clone();
    let mut errors = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    // Array elements taken out, as (array path, index) in the coordinates of their time,
    // so later paths can be mapped back to what the user wrote.
    let mut shifts: Vec<(String, usize)> = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let err = match serde_path_to_error::deserialize::<_, T>(current.clone()) {
            Ok(v) => {
                return Typed {
                    value: Some(v),
                    errors,
                    removed,
                };
            }
            Err(err) => err,
        };
        let here = path_string("", err.path());
        let message = err.into_inner().to_string();
        let original = unshift(&here, &shifts);
        // A required field we took out ourselves is no new problem.
        // Nor is one whose mapping had an unknown field reported: that is the misspelling.
        let self_made = missing_field(&message).is_some_and(|f| {
            removed.iter().any(|r| *r == join(&original, f))
                || errors.iter().any(|e| {
                    e.message.starts_with("unknown field")
                        && e.path.rsplit_once('.').map_or("", |(p, _)| p) == original
                })
        });
        if !self_made
            && !quiet(&original)
            && !errors
                .iter()
                .any(|e: &TypeError| e.path == original && e.message == message)
        {
            errors.push(TypeError {
                path: original.clone(),
                message,
            });
        }
        if here.is_empty() || !remove_at(&mut current, &here, &mut shifts) {
            break;
        }
        removed.push(original);
    }
    Typed {
        value: None,
        errors,
        removed,
    }
}

/// `x` of "missing field `x`".
fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}

/// Maps a path in the current value back to the value as written, undoing the element
/// removals newest first.
fn unshift(path: &str, shifts: &[(String, usize)]) -> String {
    let mut path = path.to_string();
    for (array, index) in shifts.iter().rev() {
        let prefix = format!("{array}[");
        let Some(rest) = path.strip_prefix(&prefix) else {
            continue;
        };
        let Some(close) = rest.find(']') else {
            continue;
        };
        let Ok(k) = rest[..close].parse::<usize>() else {
            continue;
        };
        if k >= *index {
            path = format!("{prefix}{}{}", k + 1, &rest[close..]);
        }
    }
    path
}

/// The path's segments: keys and indices.
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> Option<Vec<Seg<'_>>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key));
        }
        while let Some(after) = rest.strip_prefix('[') {
            let close = after.find(']')?;
            out.push(Seg::Index(after[..close].parse().ok()?));
            rest = &after[close + 1..];
        }
    }
    Some(out)
}

/// Replaces the value at `path` (as [`TypeError::path`] writes it), when there is one.
pub(crate) fn set_at(value: &mut Value, path: &str, new: Value) {
    let Some(segs) = segments(path) else { return };
    let mut node = value;
    for seg in &segs {
        let next = match (seg, node) {
            (Seg::Key(k), Value::Object(map)) => map.get_mut(*k),
            (Seg::Index(i), Value::Array(items)) => items.get_mut(*i),
            _ => None,
        };
        let Some(next) = next else { return };
        node = next;
    }
    *node = new;
}

/// Takes the entry at `path` out of `value`; false when there is no such entry.
fn remove_at(value: &mut Value, path: &str, shifts: &mut Vec<(String, usize)>) -> bool {
    let Some(segs) = segments(path) else {
        return false;
    };
    let Some((last, parents)) = segs.split_last() else {
        return false;
    };
    let mut node = value;
    for seg in parents {
        node = match (seg, node) {
            (Seg::Key(k), Value::Object(map)) => match map.get_mut(*k) {
                Some(v) => v,
                None => return false,
            },
            (Seg::Index(i), Value::Array(items)) => match items.get_mut(*i) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, node) {
        (Seg::Key(k), Value::Object(map)) => map.shift_remove(*k).is_some(),
        (Seg::Index(i), Value::Array(items)) if *i < items.len() => {
            items.remove(*i);
            let array = path[..path.rfind('[').unwrap_or(path.len())].to_string();
            shifts.push((array, *i));
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        name: String,
        #[serde(default)]
        size: u32,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Settings {
        url: String,
        #[serde(default)]
        jobs: u32,
        #[serde(default)]
        items: Vec<Item>,
    }

    #[test]
    fn every_problem_is_found_and_placed_where_it_was_written() {
        let v = json!({
            "url": "x", "jobs": "two", "jbos": 3,
            "items": [{ "name": "a", "size": "big" }, { "name": "b" }, { "nme": "c" }]
        });
        let typed = type_all::<Settings>(&v, &|_| false);
        let found: Vec<(&str, &str)> = typed
            .errors
            .iter()
            .map(|e| (e.path.as_str(), e.message.split(',').next().unwrap()))
            .collect();
        assert_eq!(
            found,
            [
                ("jobs", "invalid type: string \"two\""),
                ("jbos", "unknown field `jbos`"),
                ("items[0].size", "invalid type: string \"big\""),
                ("items[2].nme", "unknown field `nme`"),
            ]
        );
        // What remains types, so the checks after typing still run.
        assert!(typed.value.is_some());
    }

    #[test]
    fn a_required_field_taken_out_is_not_reported_again() {
        let v = json!({ "url": 5, "jobs": 1 });
        let typed = type_all::<Settings>(&v, &|_| false);
        assert_eq!(typed.errors.len(), 1, "{:?}", typed.errors);
        assert_eq!(typed.errors[0].path, "url");
        assert!(typed.value.is_none());
    }

    #[test]
    fn quiet_paths_are_taken_out_without_a_word() {
        let v = json!({ "url": "x", "jobs": "<later>", "jbos": 1 });
        let typed = type_all::<Settings>(&v, &|p| p == "jobs");
        assert_eq!(typed.errors.len(), 1);
        assert_eq!(typed.errors[0].path, "jbos");
    }
}
