//! Small helpers shared across modules: paths, the error chain, settings value types,
//! child processes ([`process`]) and filesystem durability ([`fs`]).

pub(crate) mod fs;
pub(crate) mod process;

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// Expands a leading `~/` to `$HOME`.
pub(crate) fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// A path from a playbook (or its settings) resolved against the playbook's directory,
/// with a leading `~/` expanded.
pub(crate) fn resolve_path(base_dir: &Path, path: &str) -> PathBuf {
    let p = expand_home(path);
    if p.is_absolute() { p } else { base_dir.join(p) }
}

/// Whether the setting path `inner` is `outer` or inside it (`requests[0].url` is
/// inside `requests`).
pub(crate) fn path_within(inner: &str, outer: &str) -> bool {
    inner
        .strip_prefix(outer)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Whether two setting paths name overlapping values: the same, or one inside the other.
pub(crate) fn paths_overlap(a: &str, b: &str) -> bool {
    path_within(a, b) || path_within(b, a)
}

/// An error and its sources as one line, each cause once (`a: b: c`).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// One value or a list of them (`schema: public` or `schema: [public, extra]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    pub(crate) fn to_vec(&self) -> Vec<T> {
        match self {
            Self::One(v) => vec![v.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

/// Deserializes a list setting that also takes a single value (`body_contains: Welcome`);
/// pair it with `#[schemars(with = "OneOrMany<T>")]`.
pub(crate) fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de> + Clone,
{
    Ok(<OneOrMany<T> as serde::Deserialize>::deserialize(d)?.to_vec())
}

/// A byte size: `16MiB`, `1 GiB`, `500kB`, or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub(crate) struct ByteSize(pub u64);

impl ByteSize {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let num: f64 = num
            .parse()
            .map_err(|_| format!("invalid size `{text}` (write e.g. `16MiB`)"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" | "k" => 1000,
            "mb" | "m" => 1000 * 1000,
            "gb" | "g" => 1000 * 1000 * 1000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            _ => {
                return Err(format!(
                    "invalid size unit in `{text}` (use B, kB, MB, GB, KiB, MiB, GiB)"
                ));
            }
        };
        Ok(Self((num * mult as f64) as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => Ok(Self(n)),
            Raw::Text(t) => Self::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A size such as `16MiB`, `1GiB`, `500kB`; a bare number is bytes.",
            "anyOf": [{ "type": "string" }, { "type": "integer", "minimum": 0 }]
        })
    }
}

/// Deserializes a map whose values may be written as strings, numbers or booleans
/// (environment variables, headers, form fields) into strings.
pub(crate) fn string_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<indexmap::IndexMap<String, String>, D::Error> {
    let raw = indexmap::IndexMap::<String, serde_json::Value>::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| Ok((k.clone(), scalar_to_string(&format!("`{k}`"), v)?)))
        .collect()
}

fn scalar_to_string<E: serde::de::Error>(what: &str, v: serde_json::Value) -> Result<String, E> {
    match v {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        serde_json::Value::Bool(b) => Ok(b.to_string()),
        other => Err(E::custom(format!("{what} must be a string, not {other}"))),
    }
}

/// A list of strings where YAML scalars (`[sleep, 5]`, `[true]`) are taken as written.
pub(crate) fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Vec::<serde_json::Value>::deserialize(d)?
        .into_iter()
        .enumerate()
        .map(|(i, v)| scalar_to_string(&format!("item {i}"), v))
        .collect()
}

/// The host name, for lock holders and reports.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// `1.5 GiB`, `312.0 KiB`, `12 B`.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Who is running drrun: `$USER`, else `$LOGNAME`, else `uid N` (a pod often has neither).
pub(crate) fn user_name() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        // SAFETY: getuid has no preconditions and cannot fail.
        .unwrap_or_else(|| format!("uid {}", unsafe { libc::getuid() }))
}

/// Inside a Kubernetes pod, the ServiceAccount it runs as (`namespace/name`), read from
/// the subject of its mounted token; only that name is kept, never the token.
pub(crate) fn service_account() -> Option<String> {
    let path = std::env::var_os("DRRUN_SERVICE_ACCOUNT_TOKEN").map_or_else(
        || std::path::PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        Into::into,
    );
    service_account_of(&std::fs::read_to_string(path).ok()?)
}

fn service_account_of(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.trim().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let sub = claims["sub"].as_str()?;
    let rest = sub.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    Some(format!("{ns}/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_account_is_read_from_its_token_subject() {
        use base64::Engine as _;
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"system:serviceaccount:drrun:drrun","aud":["x"]}"#);
        let token = format!("eyJhbGciOiJSUzI1NiJ9.{claims}.c2lnbmF0dXJl");
        assert_eq!(service_account_of(&token).as_deref(), Some("drrun/drrun"));
        assert_eq!(service_account_of("not a token"), None);
    }

    #[test]
    fn setting_paths_overlap_only_at_boundaries() {
        assert!(path_within("requests[0].url", "requests"));
        assert!(path_within("url", "url"));
        assert!(!path_within("url_extra", "url"));
        assert!(!path_within("requests", "requests[0]"));
        assert!(paths_overlap("requests", "requests[0]"));
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(ByteSize::parse("16MiB").unwrap().0, 16 << 20);
        assert_eq!(ByteSize::parse("1 GiB").unwrap().0, 1 << 30);
        assert_eq!(ByteSize::parse("500kB").unwrap().0, 500_000);
        assert_eq!(ByteSize::parse("42").unwrap().0, 42);
        assert!(ByteSize::parse("12 parsecs").is_err());
    }
}
